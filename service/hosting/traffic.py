"""Canary splits and shadow versions: how requests to a model's default route are spread over its versions.

A model entry of the config file may carry ``"traffic": {"stable": 95, "canary": 5}`` (weights by label
or version number) and ``"shadow": {"version": "canary", "fraction": 0.1}``. Only requests that name
no version or label are spread; a request naming one is never re-routed.

- Without a routing key, requests follow the weights in a smooth weighted round robin: any run of
  requests is within one request of the weights (20 of 100 for an 80/20 split), and the versions
  interleave rather than come in streaks.
- With a routing key (``X-Routing-Key``, gRPC ``x-routing-key``) the choice is sticky: the key is hashed
  to a point of [0, 1), and each version owns a stretch of that line, in the order the config lists
  them. The same key lands on the same version while the weights are unchanged; growing the *last*
  listed version's weight only moves keys onto it (list the canary last).
- The shadow takes every ``1/fraction``-th default-route classification (exactly that share).

:class:`service.hosting.rollouts.RolloutBook` writes the table's rollouts from the config. Every target
must name an AVAILABLE version; a config that names one that is not is an error logged once, and the
last good rollout of the model stays. A split whose chosen version stops serving between two syncs
sends that request to the model's default version instead (:meth:`service.hosting.table.ModelTable.route`).
"""

from __future__ import annotations

import bisect
import hashlib
from dataclasses import dataclass, field

from service.core.sampling import Share
from service.hosting.model_config import Shadow

VersionRef = int | str | None  # a version number, a label, or None for the default version
_KEY_SPACE = float(2**64)


def version_ref(key: str | int) -> VersionRef:
    """A version as the config names it (a traffic key or the shadow's version): a number, or a label."""
    return int(key) if isinstance(key, int) or key.isdigit() else key


@dataclass(eq=False)
class TrafficSplit:
    """Weights over version references (numbers or labels), in the config's order."""

    refs: tuple[VersionRef, ...]
    weights: tuple[float, ...]
    _current: list[float] = field(init=False)  # the round robin's running scores
    _bounds: list[float] = field(init=False)  # upper end of each version's stretch of [0, 1)

    def __post_init__(self) -> None:
        total = sum(self.weights)
        self._current = [0.0] * len(self.refs)
        running, self._bounds = 0.0, []
        for weight in self.weights:
            running += weight
            self._bounds.append(running / total)

    def pick(self, routing_key: str | None = None) -> VersionRef:
        if routing_key is not None:
            digest = hashlib.blake2b(routing_key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
            point = int.from_bytes(digest, "big") / _KEY_SPACE
            return self.refs[min(bisect.bisect_right(self._bounds, point), len(self.refs) - 1)]
        # Smooth weighted round robin: everyone gains its weight, the leader is chosen and pays the total.
        current = self._current
        for i, weight in enumerate(self.weights):
            current[i] += weight
        chosen = max(range(len(current)), key=current.__getitem__)
        current[chosen] -= sum(self.weights)
        return self.refs[chosen]


@dataclass(eq=False)
class ShadowSampler(Share):
    """The shadow version (``ref``) and the share of default-route classifications it also runs."""

    ref: VersionRef = None


@dataclass(frozen=True, eq=False)
class Rollout:
    """A model's split and shadow in force, with the config entries they came from."""

    traffic: tuple[tuple[str, float], ...]
    shadow_config: Shadow | None
    split: TrafficSplit | None
    shadow: ShadowSampler | None

    def describes(self, traffic: tuple[tuple[str, float], ...], shadow: Shadow | None) -> bool:
        return self.traffic == traffic and self.shadow_config == shadow
