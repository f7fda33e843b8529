"""Version labels: the config file's, changed through the API until the config file changes.

A label points at an AVAILABLE version (or ``latest``). One whose wanted version is not available
keeps the AVAILABLE version it had, or is absent; that is logged once per label and target.
"""

from __future__ import annotations

import logging

from service.core.errors import InvalidInput, NotFound
from service.hosting.model_config import LabelTarget
from service.hosting.table import ModelTable
from service.hosting.versions import VersionRecord, VersionState

logger = logging.getLogger(__name__)


class LabelBook:
    """Writes the table's labels from the config and the API's changes."""

    def __init__(self, table: ModelTable) -> None:
        self.table = table
        self._overrides: dict[str, dict[str, LabelTarget | None]] = {}  # set through the API; None: removed
        self._warned: set[tuple[str, str, LabelTarget]] = set()

    def forget_overrides(self) -> None:
        """The config file changed: it alone says where labels point again."""
        if self._overrides:
            logger.info("label changes made through the API are dropped: the model config changed")
        self._overrides.clear()

    def override(self, name: str, label: str, target: LabelTarget | None) -> None:
        """Point ``label`` at an AVAILABLE version (or ``latest``), or remove it (``None``)."""
        self.table.versions(name)  # the 404 for an unknown model
        if target is None:
            if label not in self.table.labels.get(name, {}):
                raise NotFound(f"model {name!r} has no label {label!r}")
        elif target != "latest":
            record = self.table.find(name, target)
            if record.state is not VersionState.AVAILABLE:
                raise InvalidInput(f"version {target} of model {name} is {record.state.value}; a label can point "
                                   "only at an AVAILABLE version")  # fmt: skip
        self._overrides.setdefault(name, {})[label] = target

    def apply(self, name: str, configured: dict[str, LabelTarget]) -> None:
        """Point each wanted label at its version, if that one is AVAILABLE."""
        wanted = dict(configured)
        for label, target in self._overrides.get(name, {}).items():
            if target is None:
                wanted.pop(label, None)
            else:
                wanted[label] = target
        current = self.table.labels.setdefault(name, {})
        versions = self.table.records[name]
        for label in [label for label in current if label not in wanted]:
            del current[label]
        for label, target in wanted.items():
            if _points_at_available(versions, target):
                current[label] = target
                continue
            if not _points_at_available(versions, current.get(label)):
                current.pop(label, None)
            if (name, label, target) not in self._warned:
                self._warned.add((name, label, target))
                logger.warning("label %s of model %s wants version %s, which is not available", label, name, target)

    def drop_labels_of(self, record: VersionRecord) -> None:
        """The version is unloading: labels that name it go."""
        labels = self.table.labels.get(record.name, {})
        for label in [label for label, target in labels.items() if target == record.version]:
            logger.warning("label %s of model %s is dropped: version %d is unloading", label, record.name,
                           record.version)  # fmt: skip
            del labels[label]


def _points_at_available(versions: dict[int, VersionRecord], target: LabelTarget | None) -> bool:
    if target == "latest":
        return True
    return isinstance(target, int) and target in versions and versions[target].state is VersionState.AVAILABLE
