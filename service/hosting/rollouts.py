"""The rollout book: writes each model's traffic split and shadow (:mod:`service.hosting.traffic`) into
the table from the config file, keeping the last good one when the config names a version that is not
AVAILABLE."""

from __future__ import annotations

import logging

from service.core.errors import ServiceError
from service.hosting.model_config import ModelSource, Shadow
from service.hosting.table import ModelTable
from service.hosting.traffic import Rollout, ShadowSampler, TrafficSplit, version_ref
from service.hosting.versions import VersionState

logger = logging.getLogger(__name__)


class RolloutBook:
    """Writes the table's rollouts from the config file, keeping each model's last good one."""

    def __init__(self, table: ModelTable) -> None:
        self.table = table
        self._told: set[tuple[str, str]] = set()

    def apply(self, source: ModelSource) -> None:
        """Install the model's split and shadow when every version they name is AVAILABLE (the labels
        already applied); otherwise log why, once, and keep the rollout in force."""
        name = source.name
        traffic = tuple((key, weight) for key, weight in source.traffic.items() if weight > 0)
        current = self.table.rollouts.get(name)
        if not traffic and source.shadow is None:
            self.table.rollouts.pop(name, None)
            return
        problem = self._problem(name, traffic, source.shadow)
        if problem is not None:
            if (name, problem) not in self._told:
                self._told.add((name, problem))
                kept = "keeping the previous split and shadow" if current else "no split or shadow applies"
                logger.error("model %s: the config's rollout cannot apply: %s; %s", name, problem, kept)
            return
        if current is not None and current.describes(traffic, source.shadow):
            return  # unchanged: the round robin and the shadow's share go on where they were
        refs, weights = tuple(version_ref(key) for key, _ in traffic), tuple(weight for _, weight in traffic)
        split = TrafficSplit(refs, weights) if traffic else None
        shadow = source.shadow
        sampler = ShadowSampler(shadow.fraction, ref=version_ref(shadow.version)) if shadow else None
        self.table.rollouts[name] = Rollout(traffic, shadow, split, sampler)
        self._told = {told for told in self._told if told[0] != name}
        logger.info("model %s: traffic %s, shadow %s", name, dict(traffic) or "to the default version",
                    f"{shadow.version} on {shadow.fraction:.0%}" if shadow else "none")  # fmt: skip

    def forget(self, name: str) -> None:
        """The model left the config."""
        self.table.rollouts.pop(name, None)

    def _problem(self, name: str, traffic: tuple[tuple[str, float], ...], shadow: Shadow | None) -> str | None:
        named = [("traffic", key) for key, _ in traffic] + ([("shadow", shadow.version)] if shadow else [])
        for role, key in named:
            try:
                record = self.table.find(name, version_ref(key))
            except ServiceError as exc:
                return f"{role} names {key!r}: {exc.message}"
            if record.state is not VersionState.AVAILABLE:
                return f"{role} names {key!r}, version {record.version}, which is {record.state.value}"
        return None
