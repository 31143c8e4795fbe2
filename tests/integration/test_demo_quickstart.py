"""The README's first command: `scripts/demo` brings the demo site up, registers its VEN over the API,
creates an event, and the VEN's metered reduction reaches the request; the site is stopped afterwards."""

from __future__ import annotations

import subprocess
import time

import pytest

pytestmark = pytest.mark.integration


def test_demo_check_sheds_and_stops(vplatform, figure):
    repo = vplatform.repo
    demo = repo / "scripts" / "demo"
    subprocess.run([str(demo), "stop"], capture_output=True, text=True, timeout=120)
    t0 = time.monotonic()
    run = subprocess.run([str(demo), "--check", "--kw", "2", "--minutes", "1", "--start-in", "5"],
                         capture_output=True, text=True, timeout=600)
    seconds = time.monotonic() - t0
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-4000:]
    assert "status page: http://127.0.0.1:8080/" in out
    assert "check: metered reduction" in out
    figure("scripts/demo --check (install, telemetry, event, metered shed, stop)", f"{seconds:.0f} s")
    status = subprocess.run([str(repo / "scripts" / "platform"), "status", "--site", "demo"], capture_output=True,
                            text=True, timeout=60)
    assert status.returncode == 3, status.stdout  # stopped, no process left
