"""canonical_json's fast paths (ASCII keys sorted as str, strings escaped without an encoder per
call) give the same bytes as the plain RFC 8785 rules."""

from __future__ import annotations

import json

import pytest

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
