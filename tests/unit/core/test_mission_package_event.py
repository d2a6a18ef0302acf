"""How a CoT event of a mission package is submitted to the mission (missions.package_event)."""

from __future__ import annotations

from liaison.missions import package_event
from liaison.model.event import Dest
from liaison.protocol import cot_xml

EVENT = (
    b'<event version="2.0" uid="pkg-1" type="b-m-p-s-m" how="h-g-i-g-o"'
    b' time="2026-01-01T00:00:00Z" start="2026-01-01T00:00:00Z" stale="2026-01-02T00:00:00Z">'
    b'<point lat="1" lon="2" hae="0" ce="9" le="9"/><detail>'
    b'<contact callsign="PKG"/><marti archive="x"><dest mission="other"/><dest callsign="BOB"/>'
    b'</marti><_flow-tags_ TAK-Server-x="2026-01-01T00:00:00Z"/><remarks>kept</remarks>'
    b"</detail></event>"
)


def test_every_dest_is_replaced_by_the_mission_and_flow_tags_dropped() -> None:
    event = package_event(cot_xml.parse_event(EVENT), "ops")
    assert event.dests == (Dest(mission="ops"),)
    xml = cot_xml.render_xml(event)
    assert b'<dest mission="ops"' in xml and b"BOB" not in xml and b"other" not in xml
    assert b"_flow-tags_" not in xml and b"<remarks>kept</remarks>" in xml
    assert b'archive="x"' in xml  # the rest of <marti> is kept
    assert event.uid == "pkg-1" and event.callsign == "PKG"


def test_an_event_without_detail_gets_one() -> None:
    bare = EVENT.split(b"<detail>")[0] + b"</event>"
    event = package_event(cot_xml.parse_event(bare), "ops")
    assert event.dests == (Dest(mission="ops"),)


def test_a_mission_name_is_escaped_not_injected() -> None:
    event = package_event(cot_xml.parse_event(EVENT), 'a"><dest uid="x"/>')
    assert event.dests == (Dest(mission='a"><dest uid="x"/>'),)
    assert b'<dest uid="x"' not in cot_xml.render_xml(event)


def test_archive_entry_names_stay_in_their_folder_and_are_unique() -> None:
    from liaison.api.mission_packages import _entry_name
    from liaison.storage.files import check_entry_name

    used: set[str] = set()
    names = [
        _entry_name("cot/", uid, ".cot", used)
        for uid in ("../../etc/passwd", "a\\..\\b", "..", "", "x\ny", "a_b", "a/b")
    ]
    assert names == [
        "cot/.._.._etc_passwd.cot",
        "cot/a_.._b.cot",
        "cot/item.cot",
        "cot/item-1.cot",
        "cot/x_y.cot",
        "cot/a_b.cot",
        "cot/a_b-1.cot",
    ]
    for name in names:
        check_entry_name(name)  # raises for a name leaving the archive
