"""The traffic split and the shadow's share on their own: exact shares without a routing key, sticky ones
with it."""

from __future__ import annotations

from collections import Counter

import pytest

from service.hosting.traffic import ShadowSampler, TrafficSplit, version_ref


def test_without_a_key_every_window_follows_the_weights() -> None:
    split = TrafficSplit(("stable", 2), (80.0, 20.0))
    picks = [split.pick() for _ in range(2000)]
    assert Counter(picks) == {"stable": 1600, 2: 400}
    for start in range(0, 2000, 5):  # smooth: one canary in every five, never a streak
        assert picks[start : start + 5].count(2) == 1


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0), (0.5, 0.25, 0.25), (7.0, 2.0, 1.0)])
def test_uneven_weights_are_kept_within_one_request(weights: tuple[float, ...]) -> None:
    split = TrafficSplit((1, 2, 3), weights)
    counts = Counter(split.pick() for _ in range(1000))
    total = sum(weights)
    for version, weight in zip((1, 2, 3), weights, strict=True):
        assert abs(counts[version] - 1000 * weight / total) <= 1


def test_a_routing_key_always_lands_on_one_version() -> None:
    split = TrafficSplit(("stable", "canary"), (80.0, 20.0))
    keys = [f"user-{i}" for i in range(5000)]
    first = {key: split.pick(key) for key in keys}
    for _ in range(3):
        assert all(split.pick(key) == first[key] for key in keys)
    share = Counter(first.values())["canary"] / len(keys)
    assert 0.17 <= share <= 0.23, share  # hashed keys spread by the weights


def test_growing_the_last_listed_version_only_moves_keys_onto_it() -> None:
    keys = [f"k{i}" for i in range(3000)]
    small = TrafficSplit(("stable", "canary"), (95.0, 5.0))
    large = TrafficSplit(("stable", "canary"), (50.0, 50.0))
    on_canary = {key for key in keys if small.pick(key) == "canary"}
    assert on_canary and all(large.pick(key) == "canary" for key in on_canary)


@pytest.mark.parametrize(("fraction", "taken"), [(0.1, 100), (1.0, 1000), (0.25, 250), (1 / 3, 333)])
def test_the_shadow_takes_exactly_its_share(fraction: float, taken: int) -> None:
    sampler = ShadowSampler(fraction, ref="canary")
    assert sum(sampler.take() for _ in range(1000)) == taken


def test_version_references() -> None:
    assert version_ref("12") == 12 and version_ref(3) == 3 and version_ref("canary") == "canary"
