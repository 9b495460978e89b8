"""Schema-driven fuzzing of the HTTP API (PROTOCOL.md §3): `schemathesis run --checks all`.

A real `liveroom serve --role api` answers every operation of its own `/openapi.json`: with
data the schema allows, with data it forbids, and with methods it does not list. Every answer
must be one the document declares (status, `Allow` of a 405, body), never a 500, and every
error body must be `{"error": str, "message": str}`, so that clients generated from the
document and fuzzers that trust it agree with the server.

The schemathesis CLI runs as a subprocess, as a client author would run it (its pytest plugin's
lazy loader does not work with pytest 9.2). This module is also its hooks module, for our one
check of our own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import schemathesis
from schemathesis import Case, CheckContext, Response

from tests.support import ADMIN, Proc, token

ROOT = Path(__file__).resolve().parents[2]


@schemathesis.check
def error_body_is_code_and_message(ctx: CheckContext, response: Response, case: Case) -> None:
    """§3: every error is JSON `{"error": "<code>", "message": "<human text>"}`."""
    if response.status_code < 400:
        return
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"error", "message"}, body
    assert isinstance(body["error"], str) and body["error"], body
    assert isinstance(body["message"], str), body


@pytest.fixture(scope="module")
def real_ids(api_proc: Proc) -> dict[str, str]:
    """A room with a sale and a lottery: most cases name these instead of random ids, which
    would not get past a 404."""
    room = f"fuzz-{os.getpid()}"
    auth = {"Authorization": f"Bearer {ADMIN}"}
    with httpx.Client(base_url=api_proc.http_url, headers=auth, timeout=10) as c:
        r = c.post("/api/rooms", json={"id": room, "title": "fuzz"})
        assert r.status_code == 201, r.text
        sale = {"item": "i", "title": "t", "price_cents": 100, "stock": 5, "duration_s": 600}
        r = c.post(f"/api/rooms/{room}/sales", json=sale)
        assert r.status_code == 201, r.text
        sale_id = r.json()["id"]
        r = c.post(
            f"/api/rooms/{room}/lotteries", json={"prize": "p", "winners": 1, "duration_s": 600}
        )
        assert r.status_code == 201, r.text
    return {"room": room, "sale": sale_id, "lottery": r.json()["id"]}


def _schemathesis(
    api_proc: Proc, real_ids: dict[str, str], tmp_path: Path, tok: str, max_examples: int
) -> str:
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        "".join(f'[dictionaries.{k}]\nvalues = ["{v}"]\n' for k, v in real_ids.items())
        + "[parameters]\n"
        + "".join(f'"path.{k}" = {{ dictionary = "{k}", probability = 0.7 }}\n' for k in real_ids)
    )
    cmd = [
        *(sys.executable, "-m", "schemathesis.cli", "--no-color", "--config-file", str(config)),
        *("run", f"{api_proc.http_url}/openapi.json", "--checks", "all"),
        # coverage: the boundaries of every declared limit, and methods the path does not list
        *("--phases", "examples,coverage,fuzzing", "--max-examples", str(max_examples)),
        *("--no-shrink", "--seed", "1", "--workers", "1", "--suppress-health-check", "all"),
        *("--request-timeout", "10", "--report-dir", str(tmp_path / "report")),
        *("--header", f"Authorization: Bearer {tok}"),
    ]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": __name__}
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-30000:] + run.stderr[-5000:]
    return run.stdout


def test_every_operation_as_admin(api_proc: Proc, real_ids: dict[str, str], tmp_path: Path) -> None:
    out = _schemathesis(api_proc, real_ids, tmp_path, ADMIN, max_examples=15)
    # every operation of the document was tested (an empty or unreadable one passes nothing)
    paths = httpx.get(f"{api_proc.http_url}/openapi.json").json()["paths"]
    operations = sum(len(methods) for methods in paths.values())
    assert operations >= 20 and f"Tested: {operations}\n" in out, out


def test_every_operation_as_a_viewer(
    api_proc: Proc, real_ids: dict[str, str], tmp_path: Path
) -> None:
    # the 403 paths: a viewer controls no room and manages nobody
    _schemathesis(api_proc, real_ids, tmp_path, token("fuzz-viewer", "viewer"), max_examples=8)


# -- what the fuzzer found, pinned ---------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        '{"tier": "vip", "expires_at": 1.7976931348623157e308}',  # was 503: EXPIREAT refused it
        '{"tier": "vip", "expires_at": Infinity}',  # Python's JSON reads it
        '{"tier": "vip", "expires_at": NaN}',
        '{"tier": "vip", "expires_at": false}',  # was accepted as 0
        '{"tier": "vip", "expires_at": "1"}',
    ],
)
def test_membership_expiry_must_be_a_real_epoch(api_proc: Proc, body: str) -> None:
    r = httpx.put(
        f"{api_proc.http_url}/api/members/fuzz-member",
        content=body,
        headers={"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"},
    )
    assert r.status_code == 422 and r.json()["error"] == "invalid", r.text
    assert "expires_at" in r.json()["message"]


def test_a_405_names_every_method_of_the_path(api_proc: Proc) -> None:
    # Starlette named only the methods of the first route on the path, and the error
    # handler dropped even that `Allow`
    r = httpx.patch(
        f"{api_proc.http_url}/api/members/someone", headers={"Authorization": f"Bearer {ADMIN}"}
    )
    assert r.status_code == 405 and r.json()["error"] == "method_not_allowed"
    assert r.headers["allow"] == "DELETE, GET, PUT"
