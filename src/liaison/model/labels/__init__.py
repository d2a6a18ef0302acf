"""Confidentiality labels: policy, Label, AuthSet, the one access decision, and the label formats.

The model follows STANAG 4774 (ADatP-4774 Ed. A, "Confidentiality Metadata Label Syntax"): a label
names a policy, one classification from an ordered list, and categories, each typed PERMISSIVE,
RESTRICTIVE or INFORMATIVE with values from a closed vocabulary (docs/labels.md has the whole
story; shared/reference/labels.md section 1 has the sources).

Everything here is pure: no clock, no I/O. Times are integer milliseconds since the Unix epoch and
come in as arguments. Policies are built by ``liaison.model.policy.load_policy``.

This package's interface is the names below (``from liaison.model import labels``, then
``labels.X``). Its modules, one job each:

* ``values``: named limits, Policy and its categories, Label, AuthSet, LabelError, validation;
* ``decision``: :func:`decide`, the decision semantics, and :class:`Decision`;
* ``rules``: ordering and aggregation (``dominates``, ``dominant``), the write rule
  (``check_ingest``) and the relabel rule (``check_relabel``);
* the four codecs: ``cot_codec`` (``<__seclabel>`` and the CoT root marking), ``json_codec``,
  ``banner_codec``, ``stanag4774_codec``; ``parsing`` holds what their strict parsers share.

Canonical JSON and RFC 3339 times, which the audit log shares, are in ``liaison.model.canonical``.
"""

from __future__ import annotations

from liaison.model.canonical import MAX_TIME_MS, format_time_ms
from liaison.model.labels.banner_codec import label_from_banner, label_to_banner
from liaison.model.labels.cot_codec import (
    SECLABEL_TAG,
    SECLABEL_VERSION,
    CotMarking,
    cot_marking,
    cot_marking_conflicts,
    label_from_detail,
    label_from_seclabel,
    label_from_seclabel_xml,
    label_to_seclabel,
    seclabel_to_xml,
    with_seclabel,
)
from liaison.model.labels.decision import Decision, decide
from liaison.model.labels.json_codec import (
    JSON_VERSION,
    label_from_json,
    label_from_json_obj,
    label_to_json,
    label_to_json_obj,
)
from liaison.model.labels.parsing import MAX_LABEL_TEXT_CHARS, parse_time_ms
from liaison.model.labels.rules import (
    MAX_JUSTIFICATION_CHARS,
    IngestResult,
    RelabelDirection,
    RelabelResult,
    check_ingest,
    check_relabel,
    dominant,
    dominates,
    listener_default_label,
)
from liaison.model.labels.stanag4774_codec import (
    NS_4774,
    ORIGINATOR_URN_PREFIX,
    STANAG4774_ROOTS,
    label_from_stanag4774,
    label_to_stanag4774,
)
from liaison.model.labels.values import (
    MAX_CATEGORIES,
    MAX_CATEGORY_VALUES,
    MAX_CLASSIFICATIONS,
    MAX_NAME_CHARS,
    MAX_VALUE_CHARS,
    REL,
    AuthSet,
    CategoryDef,
    CategoryType,
    Label,
    LabelError,
    Policy,
    full_authset,
    intersect_auths,
    is_value_token,
    no_authset,
    validate_label,
)

__all__ = [
    "JSON_VERSION",
    "MAX_CATEGORIES",
    "MAX_CATEGORY_VALUES",
    "MAX_CLASSIFICATIONS",
    "MAX_JUSTIFICATION_CHARS",
    "MAX_LABEL_TEXT_CHARS",
    "MAX_NAME_CHARS",
    "MAX_TIME_MS",
    "MAX_VALUE_CHARS",
    "NS_4774",
    "ORIGINATOR_URN_PREFIX",
    "REL",
    "SECLABEL_TAG",
    "SECLABEL_VERSION",
    "STANAG4774_ROOTS",
    "AuthSet",
    "CategoryDef",
    "CategoryType",
    "CotMarking",
    "Decision",
    "IngestResult",
    "Label",
    "LabelError",
    "Policy",
    "RelabelDirection",
    "RelabelResult",
    "check_ingest",
    "check_relabel",
    "cot_marking",
    "cot_marking_conflicts",
    "decide",
    "dominant",
    "dominates",
    "format_time_ms",
    "full_authset",
    "intersect_auths",
    "is_value_token",
    "label_from_banner",
    "label_from_detail",
    "label_from_json",
    "label_from_json_obj",
    "label_from_seclabel",
    "label_from_seclabel_xml",
    "label_from_stanag4774",
    "label_to_banner",
    "label_to_json",
    "label_to_json_obj",
    "label_to_seclabel",
    "label_to_stanag4774",
    "listener_default_label",
    "no_authset",
    "parse_time_ms",
    "seclabel_to_xml",
    "validate_label",
    "with_seclabel",
]
