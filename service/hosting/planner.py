"""How each version is run: the runtime and precision it is served on, and the batch sizes it pads to.

At load, for every ``(runtime, precision)`` that the settings allow (``CNN_RUNTIME``, ``CNN_PRECISION``)
and this machine supports (:mod:`service.hosting.engines`):

1. **the accuracy gate**: a way other than float32 TensorFlow is a candidate only if the model card
   records its test accuracy, no more than ``CNN_MAX_ACCURACY_DROP`` percentage points below float32
   TensorFlow's (``python -m models.precision`` records them); int8 also needs the version's quantized
   model (:func:`service.hosting.engines.missing_from_version`);
2. **timing**: each candidate runs batches of 1, 2, 4, … up to ``CNN_MAX_BATCH_SIZE`` images, in turns
   (so a drift of the machine's speed hits all alike); a size's time is its fastest call
   (:func:`time_engines`);
3. **the choice**: the candidate with the lowest geometric mean of those call times (every batch size
   weighs alike, whatever its scale);
4. **buckets**: a batch of ``n`` images is padded up to a larger measured size ``b`` when ``b``'s call
   was at least 10% faster than the call on the measured size at or below ``n`` (say batch 1 → 2). ``CNN_BATCH_BUCKETS``
   replaces the measurement: every batch is padded to the smallest listed size that holds it.

The result, :class:`ServingPlan`, is in the model metadata and logged. Feature maps and explanations
always run the float32 SavedModel.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from contract import PRECISIONS, REFERENCE, RUNTIMES, ModelCard
from service.core.settings import Settings
from service.hosting import engines

logger = logging.getLogger(__name__)

TIMED_ROUNDS = 2  # turns of every candidate over every batch size
CALLS_PER_TURN = 2  # calls timed per batch size in a turn, at least,
MIN_TURN_MS = 3.0  # and for at least this long
FAR_BEHIND = 1.5  # a candidate this many times slower than the leader after a round drops out of timing
PAD_MARGIN = 0.9  # a padded batch must be measured at least 10% faster (calls on small batches are noisy)


class StartupError(RuntimeError):
    """The settings ask for something this machine cannot do; the server does not start."""


class PlanError(ValueError):
    """No way to run a version passes the settings and the accuracy gate (the version does not load)."""


@dataclass(frozen=True)
class PlanOptions:
    """The settings that decide a plan (``CNN_RUNTIME``, ``CNN_PRECISION``, ...)."""

    runtime: str = "auto"
    precision: str = "auto"
    max_accuracy_drop_pp: float = 0.1
    max_batch_size: int = 64
    batch_buckets: tuple[int, ...] | None = None  # None: measured
    threads: int = 0
    concurrent_calls: int = 0  # 0: as many as the chosen engine runs well at once

    @classmethod
    def from_settings(cls, settings: Settings) -> PlanOptions:
        buckets = None if settings.batch_buckets is None else tuple(settings.batch_buckets)
        return cls(settings.runtime, settings.precision, settings.max_accuracy_drop, settings.max_batch_size, buckets,
                   settings.inference_threads, settings.max_concurrent_batches)  # fmt: skip


class CandidateTiming(BaseModel):
    """One way to run the version, its recorded accuracy and its fastest call per batch size."""

    runtime: str
    precision: str
    accuracy: float | None = Field(description="Recorded test accuracy (model card).")
    call_ms: dict[int, float] = Field(description="Batch size → fastest of the timed calls, milliseconds.")
    score_ms: float = Field(description="Geometric mean of call_ms: lower is faster.")


class Refusal(BaseModel):
    runtime: str
    precision: str
    reason: str


class ServingPlan(BaseModel):
    """What a version is served on, why, and the measurements behind it."""

    runtime: str
    precision: str
    accuracy: float | None = Field(description="Recorded test accuracy of this runtime and precision.")
    reference_accuracy: float | None = Field(description="Recorded test accuracy of float32 TensorFlow.")
    chosen_by: Literal["fastest", "only candidate"]
    buckets: list[int] = Field(description="Batch sizes smaller batches are padded up to.")
    buckets_from: Literal["measured", "CNN_BATCH_BUCKETS"]
    concurrent_calls: int = Field(description="Model calls in flight at once (the batcher's threads).")
    device: str
    timings: list[CandidateTiming]
    refused: list[Refusal] = Field(description="Ways not used: unsupported here, or over the accuracy gate.")


# -- candidates and the gate ------------------------------------------------------------------------
def wanted(options: PlanOptions) -> list[tuple[str, str]]:
    """Every ``(runtime, precision)`` the settings allow."""
    return [
        (runtime, precision)
        for runtime in RUNTIMES
        for precision in PRECISIONS
        if options.runtime in ("auto", runtime) and options.precision in ("auto", precision)
    ]


def check_supported(options: PlanOptions, unsupported_reason: Any) -> None:
    """A forced runtime or precision that this machine cannot run is a start-up error."""
    if options.runtime == "auto" and options.precision == "auto":
        return
    reasons = {key: unsupported_reason(*key) for key in wanted(options)}
    if all(reasons.values()):
        forced = ", ".join(
            f"CNN_{name.upper()}={value}"
            for name, value in (("runtime", options.runtime), ("precision", options.precision))
            if value != "auto"
        )
        why = "; ".join(f"{runtime}/{precision}: {reason}" for (runtime, precision), reason in reasons.items())
        raise StartupError(f"{forced} cannot run on this machine ({why or 'no such combination'})")


def reference_accuracy(card: ModelCard) -> float | None:
    recorded = card.recorded(*REFERENCE)
    if recorded is not None:
        return recorded.accuracy
    accuracy = card.metrics.get("test_accuracy")
    return float(accuracy) if isinstance(accuracy, int | float) else None


def gate(card: ModelCard, key: tuple[str, str], max_drop_pp: float) -> str | None:
    """Why the card's record keeps ``key`` from serving; ``None`` when it passes."""
    if key == REFERENCE:
        return None
    reference = reference_accuracy(card)
    recorded = card.recorded(*key)
    if recorded is None:
        return "no recorded accuracy in the model card (python -m models.precision records it)"
    if reference is None:
        return "the model card records no float32 TensorFlow accuracy to compare with"
    drop = (reference - recorded.accuracy) * 100
    if drop > max_drop_pp + 1e-9:
        return (f"accuracy {recorded.accuracy:.2%} is {drop:.2f} pp below float32's {reference:.2%}, over "
                f"CNN_MAX_ACCURACY_DROP={max_drop_pp:g}")  # fmt: skip
    return None


# -- timing, choice, buckets -----------------------------------------------------------------------
def ladder(max_batch_size: int) -> list[int]:
    """Batch sizes to time: powers of two below the largest batch, and the largest batch."""
    sizes = [1 << i for i in range(max_batch_size.bit_length()) if 1 << i < max_batch_size]
    return [*sizes, max_batch_size]


def time_engines(engines: Sequence[Any], sizes: Sequence[int], input_shape: Sequence[int]) -> list[dict[int, float]]:
    """Each engine's fastest call (ms) per batch size. Engines take turns, round after round, so a drift
    of the machine's speed hits them alike; each turn starts with an untimed call (a runtime's worker
    threads may still be spinning after the previous engine's calls) and times each size for a few
    calls in a row. An engine already far behind after a round is not timed again."""
    rng = np.random.default_rng(0)
    batches = {size: rng.random((size, *input_shape), dtype=np.float32) for size in sizes}
    best = [dict.fromkeys(sizes, math.inf) for _ in engines]
    for engine in engines:  # the first call on each shape may compile or allocate
        for size in sizes:
            engine.predict(batches[size])
    racing = list(range(len(engines)))
    for _ in range(TIMED_ROUNDS):
        for index in racing:
            engine, times = engines[index], best[index]
            engine.predict(batches[sizes[0]])
            for size in sizes:
                calls, spent = 0, 0.0
                while calls < CALLS_PER_TURN or spent < MIN_TURN_MS:
                    started = time.perf_counter()
                    engine.predict(batches[size])
                    elapsed = (time.perf_counter() - started) * 1e3
                    times[size], calls, spent = min(times[size], elapsed), calls + 1, spent + elapsed
        leader = min(score(best[index]) for index in racing)
        racing = [index for index in racing if score(best[index]) <= FAR_BEHIND * leader]
    return best


def score(call_ms: dict[int, float]) -> float:
    return math.exp(sum(math.log(ms) for ms in call_ms.values()) / len(call_ms))


def measured_buckets(call_ms: dict[int, float]) -> list[int]:
    """Measured sizes faster than some smaller measured size: worth padding up to."""
    sizes = sorted(call_ms)
    return [b for i, b in enumerate(sizes) if any(call_ms[b] < PAD_MARGIN * call_ms[a] for a in sizes[:i])]


def pad_targets(max_batch_size: int, buckets: Sequence[int], call_ms: dict[int, float] | None) -> tuple[int, ...]:
    """``targets[n]``: the rows a batch of ``n`` images runs as (``n`` itself: no padding).

    With ``call_ms`` (measured buckets) a batch pads to the fastest bucket that holds it and beats the
    measured size at or below it; without, to the smallest bucket that holds it.
    """
    targets = [0]
    for n in range(1, max_batch_size + 1):
        holding = [b for b in sorted(buckets) if b >= n]
        if call_ms is None:
            targets.append(holding[0] if holding else n)
            continue
        floor = max(size for size in call_ms if size <= n)
        faster = [b for b in holding if call_ms[b] < PAD_MARGIN * call_ms[floor]]
        targets.append(min(faster, key=call_ms.__getitem__) if faster else n)
    return tuple(targets)


# -- the plan ----------------------------------------------------------------------------------------
def plan_serving(
    saved_model: Any, card: ModelCard, version_dir: Path, options: PlanOptions
) -> tuple[Any, ServingPlan, tuple[int, ...]]:
    """Build the candidates, time them, and return the fastest engine, the plan and its pad targets."""
    refused: list[Refusal] = []
    candidates: list[tuple[str, str]] = []
    for key in wanted(options):
        reason = (
            engines.unsupported_reason(*key)
            or gate(card, key, options.max_accuracy_drop_pp)
            or engines.missing_from_version(version_dir, *key)
        )
        if reason:
            refused.append(Refusal(runtime=key[0], precision=key[1], reason=reason))
        else:
            candidates.append(key)
    if not candidates:
        raise PlanError("no runtime and precision passes the settings and the accuracy gate: "
                        + "; ".join(f"{r.runtime}/{r.precision}: {r.reason}" for r in refused))  # fmt: skip
    built = []
    builder = engines.Builder(saved_model, card, version_dir, options.threads)
    probe = np.zeros((2, *card.input_shape), np.float32)
    for runtime, precision in candidates:
        try:  # one runtime failing must not stop the others
            engine = builder.build(runtime, precision)
            output = engine.predict(probe)
            if output.shape != (2, len(card.class_names)):
                raise ValueError(f"a test call on 2 images returned shape {output.shape}")
            if not np.isfinite(output).all():
                raise ValueError("a test call returned values that are not finite")
        except Exception as exc:
            logger.warning("%s/%s does not work for %s: %s", runtime, precision, card.name, exc, exc_info=True)
            refused.append(
                Refusal(runtime=runtime, precision=precision, reason="it failed to build or run (see the log)")
            )
            continue
        built.append(engine)
    if not built:
        raise PlanError("no runtime and precision could be built and run; see the log")
    sizes = ladder(options.max_batch_size)
    measured = time_engines(built, sizes, card.input_shape)
    timings = [
        CandidateTiming(
            runtime=engine.runtime,
            precision=engine.precision,
            accuracy=_recorded_accuracy(card, (engine.runtime, engine.precision)),
            call_ms={size: round(ms, 4) for size, ms in call_ms.items()},
            score_ms=round(score(call_ms), 4),
        )
        for engine, call_ms in zip(built, measured, strict=True)
    ]
    best = min(range(len(built)), key=lambda i: timings[i].score_ms)
    chosen = timings[best]
    if options.batch_buckets is None:
        buckets = measured_buckets(measured[best])
        targets = pad_targets(options.max_batch_size, buckets, measured[best])
    else:
        buckets = sorted(options.batch_buckets)
        targets = pad_targets(options.max_batch_size, buckets, None)
    warm_up = [np.zeros((size, *card.input_shape), np.float32) for size in sizes]
    calls = built[best].allow_concurrent_calls(options.concurrent_calls, warm_up)
    plan = ServingPlan(
        runtime=chosen.runtime,
        precision=chosen.precision,
        accuracy=chosen.accuracy,
        reference_accuracy=reference_accuracy(card),
        chosen_by="fastest" if len(built) > 1 else "only candidate",
        buckets=buckets,
        buckets_from="measured" if options.batch_buckets is None else "CNN_BATCH_BUCKETS",
        concurrent_calls=calls,
        device=engines.device_name(),
        timings=timings,
        refused=refused,
    )
    return built[best], plan, targets


def _recorded_accuracy(card: ModelCard, key: tuple[str, str]) -> float | None:
    if key == REFERENCE:
        return reference_accuracy(card)
    recorded = card.recorded(*key)
    return recorded.accuracy if recorded else None


def describe(label: str, plan: ServingPlan) -> str:
    """One log line: the choice, its accuracy and every candidate's timings."""
    accuracy = f"{plan.accuracy:.2%}" if plan.accuracy is not None else "unrecorded"
    rows = "; ".join(
        f"{t.runtime}/{t.precision} " + " ".join(f"{size}:{ms:.2f}" for size, ms in t.call_ms.items())
        for t in plan.timings
    )
    return (f"model {label} serves on {plan.runtime}/{plan.precision} ({plan.chosen_by}, accuracy {accuracy}) "
            f"on {plan.device}, {plan.concurrent_calls} call(s) at once; padding to {plan.buckets or 'none'}; "
            f"call ms by batch size: {rows}")  # fmt: skip
