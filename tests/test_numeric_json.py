"""The fast JSON tensor reader against the general one: the same array, or a hand-back to it."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.core.errors import InvalidInput
from service.core.tensors import json_array, numeric_json_array

WIDEST = 10**18 - 1  # 19 digits and more are left to the general path (int64 overflow)
numbers = st.one_of(
    st.integers(-WIDEST, WIDEST),
    st.floats(allow_nan=False, allow_infinity=False),
)
leaves = st.one_of(numbers, st.integers(), st.booleans(), st.none(), st.text(max_size=3))
# Nested lists, rectangular or not, with anything JSON can hold at the leaves.
anything = st.recursive(leaves, lambda inner: st.lists(inner, max_size=4), max_leaves=40)


@st.composite
def rectangular(draw) -> list:
    shape = draw(st.lists(st.integers(1, 4), min_size=1, max_size=4))
    kind = draw(st.sampled_from(["int", "float", "mixed"]))
    count = int(np.prod(shape))
    if kind == "int":
        flat = draw(st.lists(st.integers(-WIDEST, WIDEST), min_size=count, max_size=count))
    elif kind == "float":
        flat = draw(st.lists(numbers.filter(lambda x: isinstance(x, float)), min_size=count, max_size=count))
    else:
        flat = draw(st.lists(numbers, min_size=count, max_size=count))
    return np.array(flat, dtype=object).reshape(shape).tolist()


def general(text: bytes) -> np.ndarray | None:
    try:
        return json_array(orjson.loads(text))
    except InvalidInput:
        return None


def same(fast: np.ndarray, slow: np.ndarray) -> bool:
    return fast.dtype == slow.dtype and fast.shape == slow.shape and np.array_equal(fast, slow)


@settings(max_examples=300, deadline=None)
@given(rectangular(), st.sampled_from([(",", ":"), (", ", ": "), (" ,\n", ":")]))
def test_a_rectangular_array_of_numbers_is_read_as_the_general_path_reads_it(values, separators):
    text = json.dumps(values, separators=separators).encode()
    fast = numeric_json_array(text)
    assert fast is not None, text
    assert same(fast, general(text))


@settings(max_examples=500, deadline=None)
@given(anything)
def test_anything_else_is_handed_back_or_read_alike(values):
    text = json.dumps(values).encode()
    fast = numeric_json_array(text)
    if fast is not None:
        slow = general(text)
        assert slow is not None and same(fast, slow), text


@pytest.mark.parametrize(
    "text",
    [b"[]", b"[[], []]", b"[[1, 2], [3]]", b"[[1, 2], 3]", b"[1, [2]]", b"[true, 1]", b"[null]", b'["1"]', b"5",
     b"[12345678901234567890]", b"[[[1]], [2]]"],
)  # fmt: skip
def test_ragged_empty_or_non_numeric_text_is_handed_back(text):
    assert numeric_json_array(text) is None
