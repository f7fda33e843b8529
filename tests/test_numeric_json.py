"""The fast JSON tensor readers against the general one: the same array, or a hand-back to it."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.core.errors import InvalidInput
from service.core.tensors import DTYPES, DType, flat_json_array, json_array, numeric_json_member, tensor, to_array

INT64 = st.integers(-(2**63), 2**63 - 1)  # wider integers are left to the general path
numbers = st.one_of(
    INT64,
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
        flat = draw(st.lists(INT64, min_size=count, max_size=count))
    elif kind == "float":
        flat = draw(st.lists(numbers.filter(lambda x: isinstance(x, float)), min_size=count, max_size=count))
    else:
        flat = draw(st.lists(numbers, min_size=count, max_size=count))
    return np.array(flat, dtype=object).reshape(shape).tolist()


def numeric_json_array(text: bytes) -> np.ndarray | None:
    """The fast reader on ``text`` as the one member of a body (TF Serving's ``instances``)."""
    member = numeric_json_member(b'{"instances": ' + text + b"}", {"instances"}, ())
    return None if member is None else member[1]


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
     b"[12345678901234567890]", b"[[[1]], [2]]", b"[[1, 2], [3 4]]", b"[[1, 2], [3, 4]"],
)  # fmt: skip
def test_ragged_empty_or_non_numeric_text_is_handed_back(text):
    assert numeric_json_array(text) is None


TENSORS, STRINGS = {"instances", "inputs"}, {"signature_name", "note"}
UNICODE = st.characters(
    exclude_categories=["Cs"], exclude_characters="\x00"
)  # no lone surrogate, no NUL (never in a key asked for)


def test_the_array_is_read_beside_string_or_null_members_in_any_order():
    body = b'{"signature_name": "serving_default", "inputs": [[1.5, 2], [3, 4]], "note": null}'
    name, array, others = numeric_json_member(body, TENSORS, STRINGS)
    assert name == "inputs" and others == {"signature_name": "serving_default", "note": None}
    assert same(array, np.array([[1.5, 2.0], [3.0, 4.0]]))
    body = b'{"instances": [[1, 2]], "signature_name": "feature_maps"}'
    name, array, others = numeric_json_member(body, TENSORS, STRINGS)
    assert (name, others) == ("instances", {"signature_name": "feature_maps"})
    assert same(array, np.array([[1, 2]], dtype=np.int64))


@settings(max_examples=300, deadline=None)
@given(rectangular(), st.text(UNICODE), st.text(UNICODE), st.booleans())
def test_brackets_and_quotes_in_other_members_never_change_the_array(values, key, string, before):
    tensor_member, other = f'"inputs": {json.dumps(values)}', f"{json.dumps(key)}: {json.dumps(string)}"
    members = [other, tensor_member] if before else [tensor_member, other]
    body = ("{" + ", ".join(members) + "}").encode()
    member = numeric_json_member(body, TENSORS, {key})
    if key == "inputs":
        assert member is None  # a repeated key
    else:
        assert member is not None or "[" in key + string or "]" in key + string, body
        assert member is None or (same(member[1], general(json.dumps(values).encode())) and member[2] == {key: string})


@pytest.mark.parametrize(
    "body",
    [
        b"[[1, 2]]",  # not an object
        b'{"signature_name": "x"}',  # no tensor
        b'{"instances": [[1]], "inputs": [[1]]}',  # two tensors
        b'{"instances": [[1]], "instances": [[2]]}',  # a repeated key (JSON parsers differ on which wins)
        b'{"instances": {"x": [[1]]}}',  # a named tensor
        b'{"instances": "[[1]]"}',  # a string, not an array
        b'{"instances": [[1]], "signature_name": 5}',  # a member neither a string nor null
        b'{"instances": [[1]], "signature_name": ["serving_default"]}',
        b'{"instances": [[1]], "other": "x"}',  # a key not asked for
        b'{"instances": [[1]], "signature_name\\u0000x": "x"}',  # ... that simdjson would look up as another
        b'{"instances": [[1], [2, 3]]}',  # ragged
        b'{"instances": [[1]], "signature_name": "x"',  # not JSON
    ],
)
def test_bodies_the_fast_reader_cannot_take_whole_are_handed_back(body):
    assert numeric_json_member(body, TENSORS, STRINGS) is None


# -- flat lists typed by the declared dtype (v2 JSON ``data``) ----------------------------------------------------
def general_typed(text: bytes, dtype: DType) -> np.ndarray | None:
    try:
        values = orjson.loads(text)
        return to_array(tensor(values, dtype, [len(values)] if type(values) is list else None))
    except (InvalidInput, TypeError):
        return None


exact = st.one_of(st.integers(-(2**53), 2**53), st.floats(-1e30, 1e30))  # what float32 holds without overflow


@settings(max_examples=300, deadline=None)
@given(st.lists(exact, max_size=40), st.sampled_from(DTYPES))
def test_a_flat_list_of_numbers_is_read_as_the_general_path_reads_it(values, dtype):
    text = json.dumps(values).encode()
    fast = flat_json_array(text, dtype)
    slow = general_typed(text, dtype)
    if not values:
        assert fast is None  # the general path words what is wrong with an empty tensor
    elif dtype.numpy.kind == "u" and any(type(v) is float for v in values):
        assert fast is None and slow is None  # UINT8 takes whole numbers only
    else:
        assert fast is not None and slow is not None, text
        assert same(fast, slow), text


@settings(max_examples=500, deadline=None)
@given(anything, st.sampled_from(DTYPES))
def test_anything_else_is_handed_back_to_the_general_path_or_read_alike(values, dtype):
    text = json.dumps(values).encode()
    fast = flat_json_array(text, dtype)
    if fast is not None:
        slow = general_typed(text, dtype)
        assert slow is not None and same(fast, slow), text


@pytest.mark.parametrize(
    "text",
    [b"[]", b"[[1]]", b"[1, [2, 3], []]", b"[true, 1]", b"[1, false]", b"[null]", b'["1"]', b'["[", 1]', b"5",
     b"{}", b"[1e400]", b"[NaN]", b"[1, 2"],
)  # fmt: skip
def test_empty_nested_boolean_or_non_numeric_lists_are_handed_back(text):
    for dtype in DTYPES:
        assert flat_json_array(text, dtype) is None


def test_integers_beyond_int64_are_handed_back_when_integers_are_declared():
    uint8 = next(d for d in DTYPES if d.name == "uint8")
    assert flat_json_array(b"[1, 99999999999999999999]", uint8) is None


def test_only_small_shapes_keep_their_skeleton_between_requests():
    """A shape's skeleton is kept for the next request of that shape, but not a big one's: a client that sends
    large tensors of ever new shapes cannot make the server hold megabytes."""
    from service.core import tensors

    tensors._cached_skeleton.cache_clear()
    small = np.zeros((2, 28, 28, 1)).tolist()
    for _ in range(3):
        assert same(numeric_json_array(json.dumps(small).encode()), np.zeros((2, 28, 28, 1)))
    assert tensors._cached_skeleton.cache_info()[:2] == (2, 1)  # built once, then found twice
    big = np.zeros((tensors._CACHED_SKELETON_VALUES + 1,), np.int64)
    assert same(numeric_json_array(json.dumps(big.tolist()).encode()), big)
    assert tensors._cached_skeleton.cache_info().currsize == 1


# -- a whole v2 infer body read by one parse (its ``data`` apart) --------------------------------------------------
def decoded(body: bytes) -> tuple | str:
    """What ``decode_infer`` makes of a JSON body: the request's fields and its values, or the error."""
    from service.codecs import v2

    try:
        request = v2.decode_infer(body, header_length=None)
        values = None if request.tensor is None else to_array(request.tensor)
    except InvalidInput as exc:
        return str(exc)
    array = None if values is None else (values.dtype.str, values.shape, values.tobytes())
    fields = (request.input_name, request.outputs, request.binary_output, request.request_id, request.images)
    return (*fields, array)


def general_v2(body: bytes) -> tuple | str:
    """The same, read the general way (msgspec, then ``data``'s text)."""
    from service.codecs import v2

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(v2, "_decode_in_one_parse", lambda header: None)
        return decoded(body)


def test_a_v2_body_is_read_in_one_parse_and_only_when_its_data_is_flat_numbers():
    from service.codecs import v2

    body = b'{"id": "7", "inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [0, 0.5, 1, 0.25]}]}'
    parsed, values = v2._decode_in_one_parse(body)
    assert parsed.id == "7" and parsed.inputs[0].shape == [2, 2]
    assert same(values, np.array([0, 0.5, 1, 0.25], np.float32))
    assert decoded(body) == general_v2(body)
    for data in (b"[[0, 0.5], [1, 0.25]]", b"[0, [0.5], 1, 0.25]", b'["0", 0.5, 1, 0.25]', b"[]", b"null"):
        other = body.replace(b"[0, 0.5, 1, 0.25]", data)
        assert v2._decode_in_one_parse(other) is None, other
        assert decoded(other) == general_v2(other)


V2_DATATYPES = st.sampled_from(["FP32", "FP64", "UINT8", "BYTES", "INT8", 5])
v2_data = st.one_of(st.lists(exact, max_size=12), anything)
v2_inputs = st.fixed_dictionaries(
    {"name": st.one_of(st.text(max_size=3), st.integers()), "datatype": V2_DATATYPES,
     "shape": st.one_of(st.lists(st.integers(-1, 13), max_size=3), st.lists(st.floats(0, 4), max_size=2))},
    optional={"data": v2_data, "parameters": st.one_of(st.none(), st.dictionaries(st.text(max_size=3), anything)),
              "note": anything},
)  # fmt: skip
v2_bodies = st.fixed_dictionaries(
    {"inputs": st.lists(v2_inputs, max_size=2)},
    optional={"id": st.one_of(st.text(max_size=4), st.none(), st.integers()), "outputs": st.lists(
        st.fixed_dictionaries({"name": st.text(max_size=3)}, optional={"parameters": st.dictionaries(
            st.sampled_from(["binary_data", "x["]), anything)}), max_size=2),
              "parameters": st.dictionaries(st.sampled_from(["binary_data_output", "y"]), anything), "extra": anything},
)  # fmt: skip


@st.composite
def good_v2_bodies(draw) -> dict:
    """Bodies of one input of flat numbers, its shape mostly fitting them, what else a client may send beside."""
    data = draw(st.lists(exact, min_size=1, max_size=12))
    count = len(data)
    shape = draw(st.sampled_from([[count], [1, count], [count, 1], [count + 1], [-count]]))
    datatype = draw(st.sampled_from(["FP32", "FP64", "UINT8"]))
    body = {"inputs": [{"name": draw(st.text(max_size=3)), "shape": shape, "datatype": datatype, "data": data}]}
    if draw(st.integers(0, 9)) == 0:  # data in a binary section that is not there
        body["inputs"][0]["parameters"] = {"binary_data_size": draw(st.integers(0, 8))}
    body.update(draw(st.fixed_dictionaries({}, optional={
        "id": st.text(max_size=4), "parameters": st.fixed_dictionaries({"binary_data_output": st.booleans()}),
        "outputs": st.lists(st.fixed_dictionaries({"name": st.text(max_size=3)}), max_size=2)})))  # fmt: skip
    return body


@settings(max_examples=600, deadline=None)
@given(st.one_of(v2_bodies, good_v2_bodies()))
def test_every_v2_json_body_is_read_as_the_general_path_reads_it(request_body):
    """Bodies of every kind, good or bad: the one-parse reader takes the same request or hands it back, and
    a body it takes is refused or accepted alike."""
    body = json.dumps(request_body).encode()
    assert decoded(body) == general_v2(body), body
