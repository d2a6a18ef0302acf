"""Where the feed tests find their samples.

The AIS samples (MIT, pyais) are copied into tests/data/ais (origins in tests/data/NOTICE). The
ADS-B aircraft.json (BSD-2-Clause, plord12/dump1090mqtt) is not on the list of licences the team
copies, so it stays in the shared reference folder next to the repository (or next to the
worktree's parent); tests that need it skip with a visible reason when that folder is absent.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
AIS_SAMPLE = REPO / "tests" / "data" / "ais" / "pyais-nmea_data_sample.nmea"
AIS_TYPE5 = REPO / "tests" / "data" / "ais" / "pyais-ais_test_messages.nmea"
_SHARED = [p / "shared" / "reference" / "samples" for p in (REPO.parent, REPO.parent.parent)]


def aircraft_json() -> bytes:
    """The real dump1090-fa/readsb aircraft.json snapshot (44 aircraft), or skip."""
    for base in _SHARED:
        path = base / "adsb" / "dump1090-aircraft.json"
        if path.exists():
            return path.read_bytes()
    pytest.skip("shared/reference/samples/adsb is not next to this repository (BSD sample)")
