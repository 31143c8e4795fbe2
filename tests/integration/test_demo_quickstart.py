"""The README's first command: `scripts/demo` brings the demo site up, registers its VEN over the API,
creates an event, and the VEN's metered reduction reaches the request; the site is stopped afterwards."""

from __future__ import annotations

import queue
import subprocess
import threading
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


def test_demo_stop_is_quick_and_the_foreground_demo_follows(vplatform, figure):
    """`scripts/demo` in one terminal, `scripts/demo stop` in another: the stop takes under 5 s and the first
    terminal's demo exits (0) as soon as its site is gone."""
    repo = vplatform.repo
    demo = repo / "scripts" / "demo"
    lines: queue.SimpleQueue[str] = queue.SimpleQueue()
    proc = subprocess.Popen([str(demo), "--wait", "180"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 600
        seen = []
        while not any("used" in line and "baseline" in line for line in seen):
            assert proc.poll() is None, "".join(seen)[-4000:]
            assert time.monotonic() < deadline, "no telemetry line from scripts/demo: " + "".join(seen)[-4000:]
            try:
                seen.append(lines.get(timeout=1))
            except queue.Empty:
                pass
        t0 = time.monotonic()
        stop = subprocess.run([str(demo), "stop"], capture_output=True, text=True, timeout=120)
        stop_s = time.monotonic() - t0
        assert stop.returncode == 0, stop.stdout + stop.stderr
        rc = proc.wait(timeout=15)
        exit_s = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            subprocess.run([str(demo), "stop"], capture_output=True, timeout=120)
    figure("scripts/demo stop (from a second terminal)", f"{stop_s:.1f} s; the foreground demo exited "
           f"{exit_s:.1f} s after the stop began")
    assert rc == 0
