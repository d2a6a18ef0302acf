"""The OpenAPI description served by a live server: valid, and true to the server (schemathesis)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.integration.conftest import ServerFactory
from tests.integration.helpers import clients, connect_tls, sa_event
from tests.integration.http.http_support import (
    PASSWORD,
    add_user,
    browser_session,
    cert_session,
    certs,
    enroll_url,
    https_url,
    write_groups,
)

# Time budget given to schemathesis, and the hard limit on its process.
SCHEMATHESIS_BUDGET_S = 20
SCHEMATHESIS_TIMEOUT_S = 240.0
# Test cases per operation: enough to try every parameter, few enough to stay in the budget.
SCHEMATHESIS_EXAMPLES = 10
ST = Path(sys.executable).with_name("st")


async def test_served_spec_validates(start_server: ServerFactory, tmp_path: Path) -> None:
    validator = pytest.importorskip("openapi_spec_validator")
    async with start_server(groups_file=str(write_groups(tmp_path))) as server:
        add_user(server, "webred", "RED", ["red"])
        c = certs(server, ("red1", "RED"))
        async with (
            cert_session(server, c["red1"]) as http,
            http.get(https_url(server, "/api/v1/openapi.json")) as r,
        ):
            assert r.status == 200
            mtls_spec = await r.json()
        validator.validate(mtls_spec)
        assert mtls_spec["openapi"] == "3.1.0"
        assert "clientCertificate" in mtls_spec["components"]["securitySchemes"]
        async with browser_session(server) as http:
            auth = aiohttp.encode_basic_auth("webred", PASSWORD)
            async with http.get(
                enroll_url(server, "/api/v1/openapi.json"), headers={"Authorization": auth}
            ) as r:
                assert r.status == 200
                password_spec = await r.json()
        validator.validate(password_spec)
        assert {"/login", "/logout", "/metrics"} <= set(password_spec["paths"])
        assert "/login" not in mtls_spec["paths"]


@pytest.mark.skipif(not ST.exists(), reason="schemathesis is not installed in this environment")
async def test_schemathesis_against_the_live_server(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    async with start_server(groups_file=str(write_groups(tmp_path))) as server:
        assert server.tls is not None and server.https is not None
        c = certs(server, ("red1", "RED"))
        async with (
            cert_session(server, c["red1"]) as http,
            http.get(https_url(server, "/api/v1/openapi.json")) as r,
        ):
            spec = await r.json()
        spec_path = tmp_path / "openapi.json"
        spec_path.write_text(json.dumps(spec))
        client = await connect_tls(
            server.tls.port, cert=c["red1"].cert, key=c["red1"].key, ca=c["red1"].ca
        )
        async with clients(client):
            await client.send(sa_event("ANDROID-red1", "RED1"))
            await server.writer.flush()
            proc = await asyncio.create_subprocess_exec(
                str(ST),
                "run",
                str(spec_path),
                "--url",
                f"https://localhost:{server.https.port}",
                "--request-cert",
                str(c["red1"].cert),
                "--request-cert-key",
                str(c["red1"].key),
                "--tls-verify",
                str(c["red1"].ca),
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,"
                "response_schema_conformance",
                "--mode",
                "positive",
                "--max-examples",
                str(SCHEMATHESIS_EXAMPLES),
                "--max-time",
                str(SCHEMATHESIS_BUDGET_S),
                "--workers",
                "1",
                "--seed",
                "1",
                # The WebSocket upgrade is exercised by test_web.py; requests cannot speak it.
                "--exclude-path",
                "/api/v1/stream",
                "--suppress-health-check",
                "all",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                cwd=tmp_path,
                env={**os.environ, "NO_COLOR": "1"},
            )
            try:
                out, _ = await asyncio.wait_for(proc.communicate(), SCHEMATHESIS_TIMEOUT_S)
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
        text = out.decode(errors="replace")
        assert proc.returncode == 0, text[-6000:]
        # Failures are what matter; schemathesis may also print advisory warnings (for example
        # that a schema is looser than the server's validation), which depend on what it drew.
        assert "FAILURES" not in text and "ERRORS" not in text, text[-3000:]
        # Every REST operation but the WebSocket was exercised.
        methods = {"get", "put", "post", "delete", "patch", "head", "options"}
        operations = sum(len(methods & set(item)) for item in spec["paths"].values()) - 1
        assert f"Tested: {operations}" in text, text[-2000:]
