"""ROL, the text TAK Server federates missions in (protocol/rol.py; Rol.g4 and
MissionActionROLConverter/RemoteUtil.getROLforMissionChange in TAK Server's source)."""

from __future__ import annotations

import json

import pytest

from liaison.protocol import rol

# The shape TAK Server writes (Jackson, field order of the value classes): "<op> mission\n" +
# JSON + ";".
TAK_CREATE = (
    'create mission\n{"type":"MissionMetadata","name":"ops","creatorUid":"ANDROID-1",'
    '"description":" ","chatRoom":" ","tool":"public"};'
)
TAK_ADD = (
    'update mission\n{"content":{"hashes":[],"uids":["m-1"]},"creatorUid":"ANDROID-1",'
    '"changeType":"ADD_CONTENT","missionName":"ops","missionCreatorUid":"ANDROID-1",'
    '"missionChatRoom":null,"missionTool":"public","missionDescription":null};'
)


def test_tak_create_mission_is_read() -> None:
    prog = rol.mission_program(TAK_CREATE)
    assert prog == rol.MissionMeta(
        operation="create", name="ops", creator_uid="ANDROID-1", description="", chat_room=""
    )


def test_tak_update_mission_is_read_with_nulls() -> None:
    prog = rol.mission_program(TAK_ADD)
    assert isinstance(prog, rol.MissionUpdate)
    assert (prog.change_type, prog.mission_name, prog.uids) == ("ADD_CONTENT", "ops", ("m-1",))
    assert prog.mission_chat_room == "" and prog.mission_tool == "public"


def test_encode_round_trips_and_has_tak_layout() -> None:
    meta = rol.MissionMeta(
        operation="create", name="ops", creator_uid="u", classification="SECRET//REL TO USA"
    )
    text = rol.encode(meta)
    head, body = text.split("\n", 1)
    assert head == "create mission" and body.endswith(";")
    obj = json.loads(body[:-1])
    assert list(obj)[:6] == ["type", "name", "creatorUid", "description", "chatRoom", "tool"]
    assert obj["description"] == " " and obj["tool"] == "public"
    assert rol.mission_program(text) == meta
    upd = rol.MissionUpdate(change_type="REMOVE_CONTENT", mission_name="ops", uids=("a",))
    assert rol.mission_program(rol.encode(upd)) == upd
    gone = rol.MissionMeta(operation="delete", name="ops", creator_uid="u")
    assert rol.mission_program(rol.encode(gone)) == gone


def test_grammar_idents_numbers_and_unquoted_keys() -> None:
    [st] = rol.parse('create subscription {key: "v", n: -3.5e2, ok: true, list: [a.b, 1]};')
    assert st.parameters == {"key": "v", "n": -350.0, "ok": True, "list": ["a.b", 1]}
    two = rol.parse("delete mission {};  \n create package PKG;")
    assert [(s.operation, s.resource) for s in two] == [
        ("delete", "mission"),
        ("create", "package"),
    ]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "rol_syntax"),
        ("create mission", "rol_syntax"),  # no ';'
        ("explode mission {};", "rol_syntax"),
        ('create mission {"name": "x"', "rol_syntax"),
        ('create mission {"name": "unterminated};', "rol_syntax"),
        ("create mission {name: @};", "rol_syntax"),
        ('create mission for MSG {"name":"x"};', "rol_unsupported"),
        ('create package {"name":"x"};', "rol_unsupported"),
        ('assign mission {"name":"x"};', "rol_unsupported"),
        ('create mission {"name":"a"}; create mission {"name":"b"};', "rol_unsupported"),
        ('create mission {"type":"ResourceDetails","name":"x"};', "rol_fields"),
        ('create mission {"name": 3};', "rol_fields"),
        ('create mission {"name": "a/b"};', "rol_fields"),
        ('create mission {"name": "a\\u0001"};', "rol_fields"),
        ('create mission {"name": "' + "n" * 257 + '"};', "rol_fields"),
        ('update mission {"changeType":"ADD_CONTENT"};', "rol_fields"),
        ('update mission {"changeType":"ADD_FEED","missionName":"x"};', "rol_unsupported"),
        (
            'update mission {"changeType":"ADD_CONTENT","missionName":"x","content":[]};',
            "rol_fields",
        ),
        ("create mission " + "[" * 40 + "];", "rol_syntax"),
        ("create mission {a:" + "[" * 40 + "]" * 40 + "};", "rol_too_large"),
    ],
)
def test_what_is_not_a_mission_program_is_refused(text: str, reason: str) -> None:
    with pytest.raises(rol.RolError) as err:
        rol.mission_program(text)
    assert err.value.reason == reason


def test_size_limits() -> None:
    with pytest.raises(rol.RolError) as err:
        rol.parse("x" * (rol.MAX_PROGRAM_CHARS + 1))
    assert err.value.reason == "rol_too_large"
    many = json.dumps([f"u{i}" for i in range(rol.MAX_CONTENT_UIDS + 1)])
    text = (
        'update mission {"changeType":"ADD_CONTENT","missionName":"x",'
        f'"content":{{"uids":{many}}}}};'
    )
    with pytest.raises(rol.RolError) as err:
        rol.mission_program(text)
    assert err.value.reason == "rol_too_large"
