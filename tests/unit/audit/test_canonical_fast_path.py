"""canonical_json's fast paths (ASCII keys sorted as str, strings escaped without an encoder per
call) give the same bytes as the plain RFC 8785 rules."""

from __future__ import annotations

import json

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
