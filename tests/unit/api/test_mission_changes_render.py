"""``/changes`` answers join each change's cached JSON: it must equal the change's own JSON."""

from __future__ import annotations

import json

import pytest

from liaison.api import missions as api
from liaison.api.missions import _rendered_change, change_json
from liaison.storage.missions import MissionChangeRecord, MissionRecord


def test_cached_rendering_is_the_change_json_for_items_and_files() -> None:
    rec = MissionRecord(
        name="ops",
        guid="6f1c0c55-9a51-4c3b-9f0e-4d1b2a3c4d5e",
        creator="alice",
        creator_uid="ANDROID-a",
        groups=frozenset({"Cyan"}),
        label=None,
        create_time=1_764_072_000_000,
        last_edited=1_764_072_000_000,
    )
    item = MissionChangeRecord(
        mission="ops",
        type="ADD_CONTENT",
        creator_uid="ANDROID-a",
        timestamp=1_764_072_000_005,
        content_uid="m-1",
        details=json.dumps({"type": "b-m-p-s-m", "callsign": "M1", "location": {"lat": 1.5}}),
        seq=2,
    )
    file = MissionChangeRecord(
        mission="ops",
        type="REMOVE_CONTENT",
        creator_uid="ANDROID-b",
        timestamp=1_764_072_000_105,
        resource=json.dumps({"hash": "ab" * 32, "name": "a.txt", "keywords": ["x"]}),
        content_hash="ab" * 32,
        seq=3,
        federated=True,
    )
    cache: dict[tuple[str, str, int], str] = {}
    for change in (item, file):
        text = _rendered_change(cache, rec.name, rec.guid, change)
        assert json.loads(text) == change_json(rec, change)
        assert _rendered_change(cache, rec.name, rec.guid, change) is text  # kept, not again
    assert json.loads(_rendered_change(cache, rec.name, rec.guid, item))["timestamp"].endswith(
        ".005Z"
    )
    assert set(cache) == {("ops", rec.guid, 2), ("ops", rec.guid, 3)}


def test_the_rendering_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api, "RENDERED_CHANGE_CACHE", 3)
    cache: dict[tuple[str, str, int], str] = {}
    for seq in range(1, 6):
        c = MissionChangeRecord(
            mission="ops", type="ADD_CONTENT", creator_uid="A", timestamp=seq, seq=seq
        )
        api._rendered_change(cache, "ops", "g", c)
    assert [k[2] for k in cache] == [3, 4, 5]  # the oldest went first
