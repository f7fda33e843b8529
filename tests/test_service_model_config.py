"""Version policies, the model config file, repository sources, version-directory scans and settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.core.settings import Settings
from service.hosting.model_config import ConfigError, ModelSources, VersionPolicy, read_config, repository_sources
from service.hosting.scan import scan_versions


@pytest.mark.parametrize(
    ("text", "expected"),
    [("latest", {5}), ("latest:2", {5, 3}), ("latest:9", {5, 3, 1}), ("all", {5, 3, 1})],
)
def test_policy_forms(text: str, expected: set[int]) -> None:
    assert VersionPolicy.parse(text).select([1, 3, 5]) == expected


def test_specific_policy_and_bad_forms() -> None:
    specific = VersionPolicy.model_validate({"specific": {"versions": [1, 4]}})
    assert specific.select([1, 2, 3]) == {1} and specific.specific.versions == [1, 4]
    assert VersionPolicy().select([]) == set()
    for bad in ("newest", "latest:0", "latest:x", "all:2"):
        with pytest.raises(ValueError):
            VersionPolicy.parse(bad)
    with pytest.raises(ValidationError, match="one of"):
        VersionPolicy.model_validate({"latest": {}, "all": {}})


def test_config_file(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_config_list": [
        {"name": "a", "base_path": "models/a", "version_labels": {"stable": 1, "edge": "latest"}},
        {"name": "b", "base_path": "/srv/b", "model_version_policy": {"all": {}}},
    ]}))  # fmt: skip
    a, b = read_config(path)
    assert a.base_path == tmp_path / "models" / "a" and b.base_path == Path("/srv/b")
    assert a.model_version_policy == VersionPolicy() and b.model_version_policy == VersionPolicy.parse("all")
    assert a.version_labels == {"stable": 1, "edge": "latest"}
    assert a.traffic == {} and a.shadow is None


def test_config_file_traffic_and_shadow(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_config_list": [{
        "name": "a", "base_path": "a", "version_labels": {"stable": 1, "canary": 2},
        "traffic": {"stable": 95, "2": 5.5}, "shadow": {"version": "canary", "fraction": 0.1},
    }]}))  # fmt: skip
    (a,) = read_config(path)
    assert a.traffic == {"stable": 95.0, "2": 5.5}
    assert a.shadow is not None and (a.shadow.version, a.shadow.fraction) == ("canary", 0.1)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("", "is empty"),
        (" \n", "is empty"),
        ("{", "invalid"),
        ('{"model_config_list": [{"name": "a"}]}', "base_path"),
        ('{"model_config_list": [{"name": "a", "base_path": "a"}, {"name": "a", "base_path": "b"}]}', "twice"),
        ('{"model_config_list": [{"name": "a", "base_path": "a", "version_labels": {"1x": 1}}]}', "version_labels"),
        ('{"model_config_list": [{"name": "a", "base_path": "a", "model_version_policy": {"newest": {}}}]}', "newest"),
        ('{"model_config_list": [{"name": "a", "base_path": "a", "traffic": {"1x": 1}}]}', "traffic"),
        ('{"model_config_list": [{"name": "a", "base_path": "a", "traffic": {"1": -5}}]}', "greater than or equal"),
        ('{"model_config_list": [{"name": "a", "base_path": "a", "traffic": {"1": 0, "b": 0}}]}', "add up to 0"),
        ('{"model_config_list": [{"name": "a", "base_path": "a", "traffic": {"1": "lots"}}]}', "traffic.1"),
        ('{"model_config_list": [{"name": "a", "base_path": "a", "shadow": {"version": 2}}]}', "fraction"),
        (
            '{"model_config_list": [{"name": "a", "base_path": "a", "shadow": {"version": 2, "fraction": 1.5}}]}',
            "less than or equal to 1",
        ),
        (
            '{"model_config_list": [{"name": "a", "base_path": "a", "shadow": {"version": "2b!", "fraction": 0.1}}]}',
            "shadow.version",
        ),
    ],
)
def test_bad_config_files_say_what_is_wrong(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "config.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=problem):
        read_config(path)
    with pytest.raises(ConfigError, match="cannot be read"):
        read_config(tmp_path / "absent.json")


def test_a_config_file_caught_mid_rewrite_keeps_the_models_served(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{"model_config_list": [{"name": "a", "base_path": "a"}]}')
    sources = ModelSources(path, tmp_path, [], VersionPolicy.parse("latest"))
    assert [s.name for s in sources.read()[0]] == ["a"]
    path.write_text("")  # truncated, not yet written
    assert [s.name for s in sources.read()[0]] == ["a"]
    path.write_text('{"model_config_list": [{"name": "bb", "base_path": "bb"}]}')
    found, changed = sources.read()
    assert [s.name for s in found] == ["bb"] and changed


def test_repository_sources(tmp_path: Path) -> None:
    for name in ("a", "b", ".hidden"):
        (tmp_path / name).mkdir()
    latest = VersionPolicy.parse("latest")
    assert [s.name for s in repository_sources(tmp_path, [], latest)] == ["a", "b"]
    (only,) = repository_sources(tmp_path, ["b:2", "b:3"], latest)
    assert only.name == "b" and only.model_version_policy.select([1, 2, 3, 4]) == {2, 3}
    with pytest.raises(ConfigError, match=r"\['c'\] not found"):
        repository_sources(tmp_path, ["c"], latest)
    with pytest.raises(ConfigError, match="does not exist"):
        repository_sources(tmp_path / "absent", [], latest)


def test_scan_sees_versions_completeness_and_changes(tmp_path: Path) -> None:
    for name in ("1", "2", ".3.partial", "0", "x"):
        (tmp_path / name).mkdir()
    (tmp_path / "1" / "saved_model.pb").write_bytes(b"graph")
    (tmp_path / "4").write_text("a file, not a version")
    found = scan_versions(tmp_path)
    assert sorted(found) == [1, 2]
    assert found[1].complete and not found[2].complete
    (tmp_path / "2" / "variables").mkdir()
    (tmp_path / "2" / "variables" / "variables.index").write_bytes(b"index")
    again = scan_versions(tmp_path)
    assert again[1].fingerprint == found[1].fingerprint and again[2].fingerprint != found[2].fingerprint
    assert scan_versions(tmp_path / "absent") == {}


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CNN_MODEL_CONFIG", str(tmp_path / "models.json"))
    monkeypatch.setenv("CNN_POLL_INTERVAL_S", "0.5")
    monkeypatch.setenv("CNN_VERSION_POLICY", "latest:2")
    settings = Settings()
    assert settings.model_config_file == tmp_path / "models.json" and settings.poll_interval_s == 0.5
    assert VersionPolicy.parse(settings.version_policy) == VersionPolicy.parse("latest:2")
    monkeypatch.setenv("CNN_VERSION_POLICY", "newest")
    with pytest.raises(ValidationError):
        Settings()


@pytest.mark.parametrize(
    ("host", "key", "allow", "allowed"),
    [
        ("127.0.0.1", None, None, True),
        ("localhost", None, None, True),
        ("::1", None, None, True),
        ("0.0.0.0", None, None, False),
        ("0.0.0.0", "secret", None, True),
        ("0.0.0.0", None, True, True),
        ("127.0.0.1", None, False, False),
    ],
)
def test_model_control_default(host: str, key: str | None, allow: bool | None, allowed: bool) -> None:
    assert Settings(host=host, api_key=key, allow_model_control=allow).model_control_allowed is allowed
