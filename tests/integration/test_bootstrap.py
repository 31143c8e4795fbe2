"""scripts/bootstrap is idempotent: a second run changes nothing in the environment and takes under 30 s."""

from __future__ import annotations

import subprocess
import time

import pytest

pytestmark = pytest.mark.integration


def test_second_bootstrap_changes_nothing(vplatform, figure):
    state = vplatform.plat.state
    freeze = lambda: subprocess.run([str(state / "venv" / "bin" / "python"), "-I", "-B", "-m", "pip", "freeze",  # noqa: E731
                                     "--all"], capture_output=True, text=True, check=True).stdout
    before = freeze()
    t0 = time.monotonic()
    run = subprocess.run([str(vplatform.repo / "scripts" / "bootstrap")], capture_output=True, text=True, timeout=300)
    seconds = time.monotonic() - t0
    figure("second scripts/bootstrap", f"{seconds:.1f} s, environment unchanged")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "already installed" in run.stdout
    assert freeze() == before
    owners = subprocess.run(["find", str(state / "venv"), "!", "-user", vplatform.plat._shell("echo $VDR_USER").strip(),
                             "-print", "-quit"], capture_output=True, text=True).stdout
    assert owners == "", f"files in the venv not owned by the service user: {owners}"
