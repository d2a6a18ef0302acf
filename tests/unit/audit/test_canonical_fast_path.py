"""canonical_json's fast paths (ASCII keys sorted as str, strings escaped without an encoder per
call) give the same bytes as the plain RFC 8785 rules."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liaison.model.canonical import canonical_json


def reference(value: object) -> str:
    """RFC 8785 for the values used here: keys by UTF-16 code units, minimal escaping."""
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: k.encode("utf-16-be", "surrogatepass"))
        return (
            "{"
            + ",".join(f"{json.dumps(k, ensure_ascii=False)}:{reference(value[k])}" for k in keys)
            + "}"
        )
    if isinstance(value, list):
        return "[" + ",".join(reference(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def test_ascii_and_non_ascii_keys_and_escapes() -> None:
    values: list[object] = [
        {"uid": "a", "type": "b-t-f", "accepted": True, "sha256": "x" * 64, "n": 3},
        {
            "b": 1,
            "a": ["x", "é"],
            "😀": None,
            "\uffff": True,
            "Z": "q",
        },  # U+1F600 sorts before U+FFFF
        {"s": 'quote " backslash \\ newline \n nul \x00 del \x7f ls \u2028 emoji 😀'},
        {"": [], "A": {"c": [1, {"é": "e"}], "B": False}},
    ]
    for v in values:
        assert canonical_json(v) == reference(v).encode("utf-8")
    assert canonical_json({"😀": 1, "\uffff": 2}) == '{"😀":1,"\uffff":2}'.encode()


def test_lists_of_strings_in_one_join() -> None:
    # A list of plain strings takes one join; the bytes are those of the item-by-item rules,
    # for empty, mixed and nested lists and for a str subclass (which takes the general path).
    class Name(str):
        pass

    values: list[object] = [
        [],
        ["a"],
        ["anonymous-1@127.0.0.1:40001", 'q"uote', "back\\slash", "\n\x00\x7f\u2028", "é😀"],
        ["x", 1, None, True, ["y", "z"], {"k": ["v"]}],
        {"recipients": [f"user-{i}" for i in range(199)], "to_org": "UKR"},
        (["tuple", "items"],),
        [Name("sub"), "plain"],
    ]
    for v in values:
        plain = json.loads(json.dumps(v))  # tuples as lists, as JSON has them
        assert canonical_json(v) == reference(plain).encode("utf-8")


def test_the_depth_limit_holds_for_lists_of_strings() -> None:
    # 32 levels of lists around a list of strings: the strings sit at depth 33, refused as
    # the general path refuses them; one level less is accepted.
    too_deep: object = ["s"]
    ok: object = ["s"]
    for _ in range(32):
        too_deep = [too_deep]
    for _ in range(31):
        ok = [ok]
    with pytest.raises(ValueError, match="nested too deeply"):
        canonical_json(too_deep)
    assert canonical_json(ok) == ("[" * 32 + '"s"' + "]" * 32).encode()


def test_flat_objects_through_the_c_encoder() -> None:
    # A flat object (an audit record's fields) is written by json's C encoder; the bytes are
    # those of the RFC 8785 rules, and whatever the encoder would write differently (floats,
    # integers outside the exact range, str subclasses, non-ASCII keys, nested objects) takes
    # the general path, which still refuses what it refused.
    class Name(str):
        pass

    flat: list[dict[str, object]] = [
        {},
        {"path": "federation", "uid": "b1", "priority": 2, "removed": [], "recipients": ["x"]},
        {"s": 'quote " backslash \\ newline \n nul \x00 del \x7f ls \u2028 emoji 😀', "n": None},
        {"t": True, "f": False, "neg": -(2**53 - 1), "big": 2**53 - 1, "tuple": ("b", "a")},
        {"sub": Name("x"), "b": 1},
        {"é": 1, "e": 2, "😀": 3, "\uffff": 4},
        {"nested": {"b": ["é"], "a": 1}, "z": [1, "x"]},
    ]
    for v in flat:
        plain = json.loads(json.dumps(v))
        assert canonical_json(v) == reference(plain).encode("utf-8")
    for bad in ({"x": 1.5}, {"x": 2**53}, {"x": [1.0]}, {"x": {"y": 0.5}}, {1: "a"}):
        with pytest.raises((TypeError, ValueError)):
            canonical_json(bad)
    with pytest.raises(ValueError, match="Unicode"):
        canonical_json({"x": "lone \ud800 surrogate"})


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.text(max_size=8),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(min_value=-(2**53 - 1), max_value=2**53 - 1),
            st.text(max_size=20),
            st.lists(st.text(max_size=6), max_size=4),
        ),
        max_size=8,
    )
)
def test_flat_objects_match_the_general_rules(value: dict[str, object]) -> None:
    try:
        expected: bytes | None = reference(value).encode("utf-8")
    except UnicodeEncodeError:
        expected = None  # a lone surrogate: canonical_json refuses it
    if expected is None:
        with pytest.raises(ValueError):
            canonical_json(value)
    else:
        assert canonical_json(value) == expected
