"""Label codec (b): JSON, for the API and storage. Written canonical (RFC 8785), read strictly
(any whitespace; no duplicate keys, NaN or Infinity; unknown fields refused)."""

from __future__ import annotations

import functools
import json

from liaison.model.canonical import canonical_json
from liaison.model.labels.parsing import (
    _check_size,
    _finish,
    _name_syntax,
    _parsing,
    _token_syntax,
)
from liaison.model.labels.values import _TAG_RE, Label, LabelError, Policy

JSON_VERSION = 1

_JSON_REQUIRED = frozenset({"v", "policy", "classification", "categories", "originator", "created"})
_JSON_ALLOWED = _JSON_REQUIRED | {"id"}


def label_to_json_obj(label: Label) -> dict[str, object]:
    """The label as plain JSON data (values sorted); see :func:`label_to_json`."""
    return {
        "v": JSON_VERSION,
        "policy": label.policy_id,
        "classification": label.classification,
        "categories": {tag: sorted(values) for tag, values in label.categories.items()},
        "originator": label.originator,
        "created": label.created_ms,
        "id": label.label_id,
    }


# Labels whose JSON is remembered (label_to_json): every stored event with labels on needs it,
# and a unit's updates keep one label. Least recently used dropped past this many.
LABEL_JSON_CACHE = 4096


@functools.lru_cache(maxsize=LABEL_JSON_CACHE)
def label_to_json(label: Label) -> str:
    """Canonical JSON (RFC 8785: sorted keys, no whitespace) for the API and storage.

    Remembered by label (immutable; equal labels have equal JSON)."""
    return canonical_json(label_to_json_obj(label)).decode("utf-8")


def label_from_json_obj(policy: Policy, obj: object) -> Label:
    """Build a label from JSON data (as produced by :func:`label_to_json_obj`). Strict."""
    with _parsing():
        if not isinstance(obj, dict):
            raise LabelError("malformed", "a label is a JSON object")
        keys = set(obj)
        if not all(isinstance(k, str) for k in keys):
            raise LabelError("malformed", "keys must be strings")
        if keys - _JSON_ALLOWED:
            raise LabelError("unknown_field", f"{sorted(keys - _JSON_ALLOWED)}")
        if _JSON_REQUIRED - keys:
            raise LabelError("missing_field", f"{sorted(_JSON_REQUIRED - keys)}")
        if type(obj["v"]) is not int or obj["v"] != JSON_VERSION:
            raise LabelError("bad_version", "v must be 1")
        _name_syntax(obj["policy"], obj["classification"], obj["originator"])
        created = obj["created"]
        if type(created) is not int:
            raise LabelError("bad_created", "created must be an integer (ms)")
        raw = obj["categories"]
        if not isinstance(raw, dict):
            raise LabelError("malformed", "categories must be an object")
        categories: dict[str, frozenset[str]] = {}
        for tag, values in raw.items():
            if not isinstance(tag, str) or _TAG_RE.fullmatch(tag) is None:
                raise LabelError("unknown_category", "not a category name")
            if not isinstance(values, list):
                raise LabelError("malformed", f"{tag}: values must be an array")
            tokens = _token_syntax(values, tag)
            if len(set(tokens)) != len(tokens):
                raise LabelError(f"duplicate_value:{tag}", "a value is listed twice")
            categories[tag] = frozenset(tokens)
        claimed = obj.get("id")
        if claimed is not None and not isinstance(claimed, str):
            raise LabelError("id_mismatch", "id must be a string")
        label = Label(
            policy_id=obj["policy"],
            classification=obj["classification"],
            categories=categories,
            originator=obj["originator"],
            created_ms=created,
        )
        return _finish(policy, label, claimed)


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in pairs:
        if key in out:
            # Duplicate keys are how two parsers are made to disagree about one document.
            raise LabelError("duplicate_field", "a JSON key appears twice")
        out[key] = value
    return out


def _no_constants(name: str) -> object:
    raise LabelError("malformed", f"{name} is not JSON")


def label_from_json(policy: Policy, text: str | bytes) -> Label:
    """Parse a JSON label (any whitespace; no duplicate keys, NaN or Infinity)."""
    with _parsing():
        body = _check_size(text)
        obj = json.loads(body, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constants)
        return label_from_json_obj(policy, obj)
