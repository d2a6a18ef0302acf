"""The labelled event's XML written from the received bytes (cot_xml.render_relabelled, used by
Gate.labelled) against serialising the rewritten event: the same event once parsed, and the
serialiser's own output whenever the received bytes are not of the plain shape."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liaison.gate import Gate, load_gate_config
from liaison.model import labels
from liaison.model.event import Event
from liaison.model.principal import Principal
from liaison.protocol import cot_xml

NOW = 1_700_000_000_000
POLICY = """
[policy]
id = "P"
version = 1
classifications = ["UNCLASSIFIED", "SECRET"]
[policy.categories.REL]
type = "PERMISSIVE"
required = true
values = ["USA", "UKR"]
[authz.profiles.usa-secret]
classification = "SECRET"
REL = ["USA"]
[gate.listeners.tcp]
ceiling = { classification = "SECRET", REL = "*" }
default_classification = "UNCLASSIFIED"
profile = "usa-secret"
org = "USA"
"""
OPEN = (
    '<event version="2.0" uid="U-1" type="a-f-G-U-C" how="m-g" time="2023-11-14T22:13:20Z"'
    ' start="2023-11-14T22:13:20Z" stale="2023-11-14T23:23:20Z"{attrs}>'
    '<point lat="1.5" lon="2.25" hae="0" ce="9" le="9"/>'
)


def gate() -> Gate:
    return Gate(load_gate_config(POLICY), audit=None, clock_ms=lambda: NOW)


def sender(g: Gate) -> Principal:
    org, auths = g.for_anonymous("tcp")
    return Principal(name="anon", org=org, auths=auths, listener="tcp")


def labelled(g: Gate, raw: str) -> Event:
    outcome = g.ingest(cot_xml.parse_event(raw.encode()), sender(g), None)
    assert outcome.event is not None
    return outcome.event


def serialised(event: Event) -> bytes:
    """What Gate.labelled gave before: the rewritten event serialised in full."""
    return cot_xml.render_xml(replace(event, xml=None))


def same_event(a: bytes, b: bytes) -> None:
    ea, eb = cot_xml.parse_event(a), cot_xml.parse_event(b)
    assert replace(ea, xml=None, detail=None) == replace(eb, xml=None, detail=None)
    assert ea.detail is not None and eb.detail is not None
    assert cot_xml.serialize_element(ea.detail) == cot_xml.serialize_element(eb.detail)


PLAIN = [
    OPEN.format(attrs="")
    + '<detail><contact callsign="C1" endpoint="*:-1:stcp"/><__group name="Cyan" role="Team'
    ' Member"/><remarks>a &amp; b &lt; c &#10; d</remarks></detail></event>',
    OPEN.format(attrs=' access="SECRET" releasableTo="nobody"')
    + '<detail>\n  <track speed=\'0\' course="1"/>\n  <status battery="90" />\n</detail>\n</event>',
    OPEN.format(attrs=' qos="1-r-c" opex="e"')
    + "<detail><link uid='x' relation=\"p-p\">text &gt; more</link></detail></event>",
    OPEN.format(attrs="") + "<detail></detail></event>",
    # line ends and white space in attribute values, which the parser normalises either way
    OPEN.format(attrs="") + '<detail>\r\n <contact callsign="a\tb\r\nc"/>\r\n</detail>\r\n</event>',
    OPEN.format(attrs="")
    + '<detail><uid Droid="C&#233;l&#xe8;ste"/>\u00e9t\u00e9</detail></event>',
]


@pytest.mark.parametrize("raw", PLAIN)
def test_plain_shape_is_written_from_the_received_bytes(raw: str) -> None:
    g = gate()
    event = labelled(g, raw)
    assert event.xml is not None  # written from the received bytes
    same_event(event.xml, serialised(event))
    # The label is the detail's last child, once, and the root carries its marking.
    parsed = cot_xml.parse_event(event.xml)
    assert parsed.detail is not None
    assert [c.tag for c in parsed.detail][-1] == "__seclabel"
    assert sum(c.tag == "__seclabel" for c in parsed.detail.iter()) == 1
    assert labels.label_from_detail(g.policy, parsed.detail) == labels.label_from_detail(
        g.policy, event.detail
    )
    assert (parsed.access, parsed.caveat, parsed.releasable_to) == (
        event.access,
        event.caveat,
        event.releasable_to,
    )


OTHER = [
    # a comment (the parser drops it; it must not ride along)
    OPEN.format(attrs="")
    + "<detail><!-- <__seclabel/> --><contact callsign='C'/></detail></event>",
    # a processing instruction
    OPEN.format(attrs="") + "<detail><?pi x?><contact callsign='C'/></detail></event>",
    # a CDATA section
    OPEN.format(attrs="") + "<detail><remarks><![CDATA[a<b]]></remarks></detail></event>",
    # the client's own label, at the top level and nested
    OPEN.format(attrs="") + "<detail>{seclabel}</detail></event>",
    OPEN.format(attrs="") + "<detail><x><__seclabel/></x></detail></event>",
    # attributes on <detail>, another element named detail inside, a <details> element
    OPEN.format(attrs="") + '<detail a="1"><contact callsign="C"/></detail></event>',
    OPEN.format(attrs="") + "<detail><x><detail/></x></detail></event>",
    OPEN.format(attrs="") + "<detail><details/></detail></event>",
    # an element after </detail> (serialising drops it) and an empty <detail/>
    OPEN.format(attrs="") + "<detail><contact callsign='C'/></detail><extra/></event>",
    OPEN.format(attrs="") + "<detail/></event>",
    # no detail at all
    OPEN.format(attrs="") + "</event>",
    # a namespace declared on the root and used in the detail (the root is rewritten)
    OPEN.format(attrs=' xmlns:x="urn:x"') + '<detail><x:thing a="1"/></detail></event>',
]


def the_label(g: Gate) -> labels.Label:
    label = labels.label_from_detail(g.policy, labelled(g, PLAIN[0]).detail)
    assert label is not None
    return label


def other(g: Gate, raw: str) -> bytes:
    return raw.replace("{seclabel}", labels.seclabel_to_xml(g.policy, the_label(g))).encode()


@pytest.mark.parametrize("raw", OTHER)
def test_any_other_shape_is_serialised_as_before(raw: str) -> None:
    g = gate()
    event = g.labelled(cot_xml.parse_event(other(g, raw)), the_label(g))
    assert event.xml is None
    data = cot_xml.render_xml(event)
    assert b"<!--" not in data and b"<?" not in data and b"CDATA" not in data
    parsed = cot_xml.parse_event(data)
    assert parsed.detail is not None
    assert sum(c.tag == "__seclabel" for c in parsed.detail.iter()) == 1


def test_render_relabelled_refuses_each_irregular_shape_directly() -> None:
    event = cot_xml.parse_event(PLAIN[0].encode())
    kw = {"access": "A", "caveat": None, "releasable_to": "R", "appended": "<x />"}
    assert cot_xml.render_relabelled(PLAIN[0].encode(), event, **kw) is not None
    for raw in OTHER:
        assert cot_xml.render_relabelled(other(gate(), raw), event, **kw) is None


def test_the_label_element_and_marking_are_kept_per_label() -> None:
    g = gate()
    first = labelled(g, PLAIN[0])
    label = labels.label_from_detail(g.policy, first.detail)
    assert label is not None
    again = g.labelled(cot_xml.parse_event(PLAIN[1].encode()), label)
    assert first.detail is not None and again.detail is not None
    # One <__seclabel> element shared by both rewritten details, neither changed.
    assert first.detail[-1] is again.detail[-1]
    assert first.xml is not None and again.xml is not None
    assert first.xml.count(b"<__seclabel") == again.xml.count(b"<__seclabel") == 1


# Random details: tags, attributes and text drawn with the characters that need escaping, each
# written by ElementTree (as a client might), then labelled both ways.
_TEXT = st.text(alphabet=st.sampled_from("ab &<>\"'\n\t\u00e9"), max_size=8)
_TAGS = st.sampled_from(["contact", "__group", "status", "remarks", "link", "track", "x"])


@st.composite
def _elements(draw: st.DrawFn, depth: int = 0) -> ET.Element:
    el = ET.Element(draw(_TAGS))
    for name in draw(st.lists(st.sampled_from(["a", "uid", "callsign"]), unique=True)):
        el.set(name, draw(_TEXT))
    el.text = draw(st.none() | _TEXT)
    if depth < 2:
        el.extend(draw(st.lists(_elements(depth + 1), max_size=3)))
    el.tail = draw(st.none() | _TEXT)
    return el


@settings(max_examples=200, deadline=None)
@given(children=st.lists(_elements(), max_size=4), text=st.none() | _TEXT)
def test_random_details_parse_to_the_same_event(
    children: list[ET.Element], text: str | None
) -> None:
    detail = ET.Element("detail")
    detail.text = text
    detail.extend(children)
    raw = OPEN.format(attrs="") + ET.tostring(detail, encoding="unicode") + "</event>"
    g = gate()
    event = labelled(g, raw)
    if event.xml is None:  # ElementTree wrote <detail /> for an empty one: serialised
        assert not children and not text
        return
    same_event(event.xml, serialised(event))
