"""GET /metrics from a running server, read back with prometheus-client's own parser."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import ServerFactory
from tests.integration.http.http_support import cert_session, certs, https_url, write_groups

DOCS = Path(__file__).resolve().parents[3] / "docs" / "api.md"


def _documented_names() -> set[str]:
    """The exposed names that docs/api.md's metrics table lists (first column, in backticks)."""
    text = DOCS.read_text(encoding="utf-8")
    section = text.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([a-z_]+)", section, flags=re.MULTILINE))


async def test_metrics_parse_with_prometheus_client(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    async with start_server(groups_file=str(write_groups(tmp_path))) as server:
        # An operator's certificate (api.roles; the groups file makes "ops" one).
        c = certs(server, ("ops", "OPS"))
        async with cert_session(server, c["ops"]) as http:
            async with http.get(https_url(server, "/api/v1/health")) as r:
                assert r.status == 200
            async with http.get(https_url(server, "/metrics")) as r:
                assert r.status == 200
                assert r.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
                text = await r.text()

    families = list(text_string_to_metric_families(text))
    types = {f.name: f.type for f in families}
    samples = {s.name for f in families for s in f.samples}
    assert types, text
    assert not [n for n in [*types, *samples] if "_total_total" in n], text
    # Labelled counters with nothing counted yet used to be written as "<name>_total_total 0".
    for base in ("liaison_denied", "liaison_unrouted", "liaison_held", "liaison_events_in"):
        assert types.get(base) == "counter", (base, types)
    for name in ("liaison_subscribers", "liaison_latest_uids"):
        assert types.get(name) == "gauge", (name, types)
    # Every counter is typed counter and named <base>_total; nothing else is untyped.
    for f in families:
        assert f.type in {"counter", "gauge"}, (f.name, f.type)
        if f.type == "counter":
            assert {s.name for s in f.samples} <= {f"{f.name}_total"}, f
    assert 'liaison_http_responses_total{code="200"}' in text

    # docs/api.md lists every metric this server exposes, by the name a scraper sees.
    exposed = {f"{n}_total" if t == "counter" else n for n, t in types.items()}
    assert exposed - _documented_names() == set()
