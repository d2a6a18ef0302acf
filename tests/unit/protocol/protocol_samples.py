"""Where the protocol tests find their golden samples: tests/data, plus the team's shared folder.

Permissively licensed samples are copied into tests/data/cot (origins in tests/data/NOTICE). The
GPL/AGPL/EPL samples stay in ../shared/reference/samples/ next to the repository; tests that need
them skip with a visible reason when that folder is absent (a clone outside the team's setup).
"""

from __future__ import annotations

import contextlib
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
LOCAL = REPO / "tests" / "data" / "cot"
SHARED = REPO.parent / "shared" / "reference" / "samples" / "cot"
SHARED_MISSING = (
    f"shared GPL/EPL samples not found at {SHARED} (only the MIT/Apache copies in tests/data run)"
)

# Not CoT events: the <auth> message, and the protocol.txt negotiation templates whose times
# are the literal placeholder 'TIME'.
AUTH_SAMPLES = frozenset({"other-auth-01.xml"})
TEMPLATE_SAMPLES = frozenset({"other-takp-v-01.xml", "other-takp-q-01.xml", "other-takp-r-01.xml"})


def xml_sample_paths() -> list[Path]:
    """Every XML sample available: the local copies, then the shared ones not copied."""
    local = sorted((LOCAL / "xml").glob("*.xml"))
    names = {p.name for p in local}
    shared = sorted(p for p in (SHARED / "xml").glob("*.xml") if p.name not in names)
    return local + shared


def xml_sample_params(*, events_only: bool = False) -> list[object]:
    """pytest parameters for the XML samples, with a skipped entry when the shared set is absent."""
    params: list[object] = []
    for path in xml_sample_paths():
        if events_only and (path.name in AUTH_SAMPLES or path.name in TEMPLATE_SAMPLES):
            continue
        params.append(pytest.param(path, id=path.name))
    if not (SHARED / "xml").is_dir():
        params.append(
            pytest.param(None, id="shared-samples", marks=pytest.mark.skip(reason=SHARED_MISSING))
        )
    return params


def shared_path(relative: str) -> Path:
    """A file in the shared sample folder, or skip the test with the reason."""
    path = SHARED / relative
    if not path.is_file():
        pytest.skip(SHARED_MISSING)
    return path


def read(path: Path) -> bytes:
    return path.read_bytes()


def fill_template(data: bytes, when: str = "2024-05-01T12:00:00.000Z") -> bytes:
    """A protocol.txt negotiation template with its 'TIME' placeholders filled in."""
    return data.replace(b"'TIME'", f"'{when}'".encode())


def expected_element(data: bytes) -> bytes:
    """The element of a one-message sample: declaration and outer whitespace removed."""
    body = data.strip()
    if body.startswith(b"<?xml"):
        body = body[body.index(b"?>") + 2 :].strip()
    return body


Structure = tuple[str, tuple[tuple[str, object], ...], str, str, tuple["Structure", ...]]


def structure(element: ET.Element) -> Structure:
    """What XML means here: tag, attributes (unordered), text and tail (outer whitespace
    ignored), children in order. Track speed/course compare as numbers, since the protobuf
    Track message carries doubles (tak-protocol.md 2.3)."""
    attrib: dict[str, object] = dict(element.attrib)
    if element.tag == "track" and set(attrib) == {"speed", "course"}:
        with contextlib.suppress(ValueError):
            numbers = {k: float(str(v)) for k, v in attrib.items()}
            if all(math.isfinite(n) for n in numbers.values()):
                attrib = dict(numbers)
    return (
        str(element.tag),
        tuple(sorted(attrib.items())),
        (element.text or "").strip(),
        (element.tail or "").strip(),
        tuple(structure(child) for child in element),
    )
