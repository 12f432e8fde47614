"""Payload encoding (``fairqueue.jobs.encode``, in the Rust core): every payload a
user enqueues goes through it. Checked against the standard library's ``json`` as
the reference: what it encodes, ``json.loads`` gives back equal; what it refuses,
it names."""

from __future__ import annotations

import collections
import enum
import json
import math
from datetime import datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import fairqueue as fq
from fairqueue.jobs import encode

BIG = 1 << 30

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(blacklist_categories=["Cs"])),
    lambda children: st.lists(children) | st.tuples(children, children) | st.dictionaries(st.text(), children),
    max_leaves=30,
)

values_without_floats = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(st.characters(blacklist_categories=["Cs"])),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=30,
)


def plain(value: Any) -> Any:
    """What JSON gives back: tuples become lists."""
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


@given(json_values)
def test_what_it_encodes_decodes_to_an_equal_value(value: Any) -> None:
    text = encode(value, "the payload", BIG)
    decoded = json.loads(text)
    assert decoded == plain(value)
    # Equal is not enough for numbers: True must not come back as 1, nor 1.0 as 1.
    assert json.dumps(decoded) == json.dumps(plain(value))


@given(values_without_floats)
def test_without_floats_the_text_is_the_standard_librarys_compact_utf8_json(value: Any) -> None:
    # (Floats decode equal but may be spelled differently: 1e16, not 1e+16.)
    assert encode(value, "the payload", BIG) == json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def test_subclasses_of_plain_types_encode_as_their_values() -> None:
    class Colour(str, enum.Enum):
        RED = "red"

    class Level(enum.IntEnum):
        HIGH = 3

    Point = collections.namedtuple("Point", "x y")
    value = {"c": Colour.RED, "l": Level.HIGH, "p": Point(1, 2), "o": collections.OrderedDict(a=1)}
    assert json.loads(encode(value, "p", BIG)) == {"c": "red", "l": 3, "p": [1, 2], "o": {"a": 1}}


def test_integers_past_64_bits_keep_every_digit() -> None:
    for n in (2**63, 2**64, -(2**70), 10**40):
        assert json.loads(encode([n], "p", BIG)) == [n]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_floats_are_refused_where_they_sit(bad: float) -> None:
    with pytest.raises(fq.NotSerializable, match=r"^the payload\['a'\]\[1\] is (nan|inf|-inf), which JSON cannot carry"):
        encode({"a": [0, bad]}, "the payload", BIG)


def test_a_non_string_key_is_refused_with_its_type() -> None:
    with pytest.raises(fq.NotSerializable, match=r"^p\[0\] has key 1 of type int; JSON keys must be str"):
        encode([{1: "a"}], "p", BIG)


def test_an_object_is_refused_naming_its_type_and_what_to_do() -> None:
    with pytest.raises(fq.NotSerializable, match=r"^p\['args'\]\[1\]\['when'\] is datetime.* of type datetime.*plain data"):
        encode({"args": ["ok", {"when": datetime(2026, 1, 1)}]}, "p", BIG)
    for other in (b"bytes", {1, 2}, object(), 1j):
        with pytest.raises(fq.NotSerializable, match="not JSON-serialisable"):
            encode({"x": other}, "p", BIG)


def test_a_lone_surrogate_is_refused() -> None:
    with pytest.raises(fq.NotSerializable, match=r"^p\[0\] is '\\ud800', a str with a lone surrogate"):
        encode(["\ud800"], "p", BIG)


def test_a_key_with_a_lone_surrogate_is_refused_at_that_key() -> None:
    with pytest.raises(fq.NotSerializable, match=r"^p\['\\udc00'\] is '\\udc00', a str with a lone surrogate"):
        encode({"\udc00": 1}, "p", BIG)


def test_nesting_is_refused_past_200_levels_and_a_list_that_contains_itself() -> None:
    deep: Any = []
    for _ in range(199):
        deep = [deep]
    assert encode(deep, "p", BIG).count("[") == 200
    with pytest.raises(fq.NotSerializable, match="more than 200 deep"):
        encode([deep], "p", BIG)
    looped: list[Any] = []
    looped.append(looped)
    with pytest.raises(fq.NotSerializable, match="contain itself"):
        encode(looped, "p", BIG)


def test_the_size_limit_counts_utf8_bytes_and_names_both_figures() -> None:
    text = "é" * 10  # 20 bytes as UTF-8, 22 with the quotes
    assert len(encode(text, "p", 22).encode()) == 22
    with pytest.raises(fq.LimitExceeded, match=r"^p is 22 bytes as JSON, over the limit of 21 bytes$"):
        encode(text, "p", 21)
