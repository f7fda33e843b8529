"""Which models are served and which of their versions: the model config file and version policies.

The config file (``CNN_MODEL_CONFIG``) is JSON with TF Serving's ``model_config_list`` fields::

    {"model_config_list": [
        {"name": "fashion_cnn", "base_path": "/models/fashion_cnn",
         "model_version_policy": {"latest": {"num_versions": 2}},
         "version_labels": {"stable": 2, "canary": 3},
         "traffic": {"stable": 95, "canary": 5},
         "shadow": {"version": "canary", "fraction": 0.1}}
    ]}

``traffic`` and ``shadow`` are this server's own (:mod:`service.hosting.rollout`): how requests to the
model's default route are spread over its versions, and which version also runs a share of them
unseen. Or the file is TF Serving's own ``ModelServerConfig`` text proto (``model_config_list { config { name: ...
base_path: ... } }``), so a TF Serving deployment keeps its file. Without it, every model directory of
the repository is served under ``CNN_VERSION_POLICY``, narrowed by ``CNN_MODELS`` (``name`` or
``name:version``) when that is set.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Literal

from google.protobuf import json_format, text_format
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator
from tensorflow_serving.config import model_server_config_pb2

from service.core.errors import describe_validation
from service.core.request import LABEL_PATTERN, VERSION_NUMBER

logger = logging.getLogger(__name__)

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
Label = Annotated[str, StringConstraints(pattern=LABEL_PATTERN)]
# What a label points at: a version number, or "latest" (whichever version is the default).
LabelTarget = int | Literal["latest"]
# A version as a traffic split names it (a JSON object key): its number in digits, or a label.
VersionKey = Annotated[str, StringConstraints(pattern=rf"^([0-9]{{1,18}}|{LABEL_PATTERN[1:-1]})$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Latest(_Strict):
    num_versions: int = Field(1, ge=1)


class All(_Strict):
    pass


class Specific(_Strict):
    versions: list[int] = Field(min_length=1)


class VersionPolicy(_Strict):
    """TF Serving's ``model_version_policy``: at most one of ``latest`` (the default, N newest), ``all``
    or ``specific``."""

    latest: Latest | None = None
    all: All | None = None
    specific: Specific | None = None

    @model_validator(mode="after")
    def _one(self) -> VersionPolicy:
        chosen = [policy for policy in (self.latest, self.all, self.specific) if policy is not None]
        if len(chosen) > 1:
            raise ValueError("a version policy is one of 'latest', 'all' or 'specific'")
        return self

    @classmethod
    def parse(cls, text: str) -> VersionPolicy:
        """``latest``, ``latest:N`` or ``all`` (the ``CNN_VERSION_POLICY`` forms)."""
        kind, _, count = text.partition(":")
        if kind == "all" and not count:
            return cls(all=All())
        if kind == "latest" and (not count or (count.isascii() and count.isdigit())):
            return cls(latest=Latest(num_versions=int(count or 1)))
        raise ValueError(f"version policy must be 'latest', 'latest:N' or 'all', not {text!r}")

    def select(self, versions: Iterable[int]) -> set[int]:
        """The versions this policy serves, out of those ready to load."""
        available = sorted(set(versions), reverse=True)
        if self.all is not None:
            return set(available)
        if self.specific is not None:
            return set(available) & set(self.specific.versions)
        return set(available[: (self.latest or Latest()).num_versions])


class Shadow(_Strict):
    """A version that also runs ``fraction`` of the default route's classifications, its answers compared
    with the live ones and never sent."""

    version: int | Label
    fraction: float = Field(gt=0, le=1)


class ModelSource(_Strict):
    """One served model: where its versions are, which of them to serve, its version labels, and how its
    default route's traffic is spread (``traffic``: weights by version number or label) and shadowed."""

    name: Annotated[str, StringConstraints(pattern=MODEL_NAME.pattern)]
    base_path: Path
    model_platform: Literal["tensorflow"] = "tensorflow"
    model_version_policy: VersionPolicy = VersionPolicy()
    version_labels: dict[Label, LabelTarget] = {}
    traffic: dict[VersionKey, Annotated[float, Field(ge=0, allow_inf_nan=False)]] = {}
    shadow: Shadow | None = None

    @model_validator(mode="after")
    def _some_weight(self) -> ModelSource:
        if self.traffic and not sum(self.traffic.values()) > 0:
            raise ValueError("traffic: the weights add up to 0; give some version a positive weight")
        return self


class ModelConfigFile(_Strict):
    model_config_list: list[ModelSource]

    @model_validator(mode="after")
    def _unique(self) -> ModelConfigFile:
        names = [source.name for source in self.model_config_list]
        duplicated = sorted({name for name in names if names.count(name) > 1})
        if duplicated:
            raise ValueError(f"models listed twice: {duplicated}")
        return self


class ConfigError(Exception):
    """The model config file, the repository or the models asked for cannot be used (the message says
    why; ``setting`` names the setting at fault)."""

    def __init__(self, message: str, setting: str = "model_config_file") -> None:
        super().__init__(message)
        self.setting = setting


def _tf_serving_text(path: Path, text: str) -> dict:
    """TF Serving's own config format, a ``ModelServerConfig`` text proto, as this file's JSON fields."""
    try:
        message = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    except text_format.ParseError as exc:
        raise ConfigError(f"model config {path} is neither JSON nor a TF Serving ModelServerConfig: {exc}") from None
    configs = json_format.MessageToDict(message, preserving_proto_field_name=True)
    entries = configs.get("model_config_list", {}).get("config", [])
    for entry in entries:
        if entry.pop("model_platform", "tensorflow") != "tensorflow":
            raise ConfigError(f"model config {path}: model {entry.get('name')!r} is not a TensorFlow model")
    return {"model_config_list": entries}


def read_config(path: Path) -> list[ModelSource]:
    """Parse the config file, JSON or TF Serving's text proto; a relative ``base_path`` is relative to the
    file's directory."""
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8", errors="replace")
        stripped = text.lstrip()
        if not stripped:  # a file being rewritten in place reads empty for a moment: not "serve nothing"
            raise ConfigError(f"model config {path} is empty")
        document = json.loads(raw) if stripped.startswith("{") else _tf_serving_text(path, text)
        config = ModelConfigFile.model_validate(document)
    except OSError as exc:
        raise ConfigError(f"model config {path} cannot be read: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"model config {path} is invalid: not JSON ({exc})") from None
    except ValidationError as exc:
        raise ConfigError(f"model config {path} is invalid: {describe_validation(exc, 'config')}") from None
    return [
        source.model_copy(update={"base_path": path.parent / source.base_path}) if not source.base_path.is_absolute()
        else source
        for source in config.model_config_list
    ]  # fmt: skip


def repository_sources(root: Path, wanted: list[str], policy: VersionPolicy) -> list[ModelSource]:
    """Every model directory under ``root``; ``wanted`` entries (``name`` or ``name:version``) narrow the
    set, and a ``name:version`` entry pins that model to the versions named."""
    if not root.is_dir():
        raise ConfigError(f"model repository {root} does not exist", "model_repository")
    pinned: dict[str, set[int] | None] = {}
    for entry in wanted:
        name, _, version = entry.partition(":")
        if version:
            if not VERSION_NUMBER.fullmatch(version):
                raise ConfigError(f"entry {entry!r}: the version must be a number", "models")
            versions = pinned.setdefault(name, set())
            if versions is not None:
                versions.add(int(version))
        else:
            pinned[name] = None
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and MODEL_NAME.match(p.name))
    missing = sorted(set(pinned) - set(names))
    if missing:
        raise ConfigError(f"models {missing} not found in {root}", "models")
    sources = []
    for name in names:
        if pinned and name not in pinned:
            continue
        versions = pinned.get(name)
        chosen = VersionPolicy(specific=Specific(versions=sorted(versions))) if versions else policy
        sources.append(ModelSource(name=name, base_path=root / name, model_version_policy=chosen))
    return sources


class ModelSources:
    """The models to serve, from the config file (re-read when its size or time changes) or from the
    repository's directories (listed on every read).

    The first read raises :class:`ConfigError`; after that a bad config is logged once per distinct
    problem and the last good list stays in force. Reads touch the file system: call from a thread.
    """

    def __init__(self, config_file: Path | None, repository: Path, wanted: list[str], policy: VersionPolicy) -> None:
        self.config_file = config_file
        self.repository = repository
        self.wanted = wanted
        self.policy = policy
        self.current: dict[str, ModelSource] = {}
        self._read_once = False
        self._stamp: tuple[int, int] | None = None  # the config file's (size, mtime) when read
        self._error: str | None = None

    def read(self) -> tuple[list[ModelSource], bool]:
        """The models to serve, and whether the config file changed since the last read."""
        changed = False
        try:
            if self.config_file is None:
                found = repository_sources(self.repository, self.wanted, self.policy)
            else:
                stamp = _stamp(self.config_file)
                if stamp == self._stamp:
                    return list(self.current.values()), False
                found = read_config(self.config_file)
                changed, self._stamp = self._read_once, stamp
        except ConfigError as exc:
            if not self._read_once:
                raise
            if str(exc) != self._error:  # once per distinct problem, not on every poll
                logger.error("%s; keeping the previous model list", exc)
            self._error = str(exc)
            return list(self.current.values()), False
        self._error, self._read_once = None, True
        self.current = {source.name: source for source in found}
        if changed:
            logger.info("model config %s changed: %d model(s)", self.config_file, len(found))
        return found, changed


def _stamp(path: Path) -> tuple[int, int]:
    try:
        stat = path.stat()
    except OSError as exc:
        raise ConfigError(f"model config {path} cannot be read: {exc.strerror}") from None
    return stat.st_size, stat.st_mtime_ns
