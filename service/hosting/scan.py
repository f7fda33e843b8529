"""What is on disk under a model's base path: its version directories, and whether each is complete.

A version is a directory named by a positive number; it is complete when ``saved_model.pb`` is there.
Publishing by write-then-rename (a ``.N.partial`` directory renamed to ``N``) makes a version appear
complete at once. The reconciler loads a version that is complete when first seen, or whose files
(``fingerprint``) did not change between two scans, so a directory still being written in place is
not loaded half-written.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from service.core.request import VERSION_NUMBER

logger = logging.getLogger(__name__)

SAVED_MODEL_FILE = "saved_model.pb"

# (path relative to the version directory, size, modification time in ns) of every file.
Fingerprint = tuple[tuple[str, int, int], ...]


@dataclass(frozen=True, slots=True)
class VersionDir:
    version: int
    path: Path
    fingerprint: Fingerprint

    @property
    def complete(self) -> bool:
        return any(name == SAVED_MODEL_FILE for name, _, _ in self.fingerprint)


def fingerprint(path: Path) -> Fingerprint:
    """Every file's name, size and mtime; empty when the directory is gone (or unreadable)."""
    entries = []
    for folder, _, files in os.walk(path):
        for file in files:
            full = os.path.join(folder, file)
            try:
                stat = os.stat(full)
            except OSError:  # removed while we looked: the next scan sees the change
                continue
            entries.append((os.path.relpath(full, path), stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(entries))


def scan_versions(base_path: Path, reported: set[Path] | None = None) -> dict[int, VersionDir]:
    """The version directories under ``base_path`` (none when it does not exist): directories named by
    ASCII digits. Any other visible name is logged once (``reported`` remembers which) and ignored."""
    try:
        children = list(base_path.iterdir())
    except OSError:
        return {}
    found = {}
    for child in children:
        if VERSION_NUMBER.fullmatch(child.name) and int(child.name) > 0 and child.is_dir():
            found[int(child.name)] = VersionDir(int(child.name), child, fingerprint(child))
        elif not child.name.startswith(".") and reported is not None and child not in reported:
            reported.add(child)
            logger.warning("ignoring %s: a version directory is named by ASCII digits (1, 2, ...)", child)
    return found


def scan_models(base_paths: dict[str, Path], reported: set[Path]) -> dict[str, dict[int, VersionDir] | None]:
    """Each model's version directories; ``None`` (logged) for a model whose scan failed: the others go on."""
    scans: dict[str, dict[int, VersionDir] | None] = {}
    for name, base_path in base_paths.items():
        try:
            scans[name] = scan_versions(base_path, reported)
        except Exception:
            logger.exception("scanning model %s in %s failed", name, base_path)
            scans[name] = None
    return scans
