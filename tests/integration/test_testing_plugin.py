"""The project's pytest plugin (dr_testing.plugin, entry point pytest11 `volttron_dr`) as a user meets it: a test
file of their own, run by pytest in a fresh process with nothing but the installed plugin, gets a real platform
from `volttron_instance`, two client agents with credentials of their own from `build_agent` that reach each
other over the bus and answer RPC; afterwards no process of that platform is left and its folder is gone. As
root (the platform runs as the service user) and as a normal user."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from dr_testing.platform import site_processes

pytestmark = pytest.mark.integration
pytest_plugins = ["pytester"]
SERVICE_USER = os.environ.get("VDR_USER", "volttron-dr")   # the project's service user: a normal user

INNER = '''
import json, os

def test_real_platform(volttron_instance, build_agent):
    a = build_agent("inner.a")
    b = build_agent("inner.b")
    got = b.subscribe("inner/topic")
    a.publish("inner/topic", {"x": 1})
    volttron_instance.wait_for(lambda: got.on_topic("inner/topic"), timeout=20, what="the message")
    assert got.on_topic("inner/topic") == [{"x": 1}]
    assert "inner.b" in a.agent.vip.peerlist().get(timeout=10)
    b.agent.vip.rpc.export(lambda x: x * 2, "double")
    assert a.rpc("inner.b", "double", 21) == 42
    with open(os.environ["VDR_PLUGIN_PROBE"], "w") as out:
        json.dump({"site": volttron_instance.site, "home": str(volttron_instance.home),
                   "dir": str(volttron_instance.plat.site_dir)}, out)
'''


def test_volttron_instance_is_a_real_platform_that_leaves_nothing_behind(pytester, monkeypatch, figure):
    probe = pytester.path / "probe.json"
    monkeypatch.setenv("VDR_PLUGIN_PROBE", str(probe))
    pytester.makepyfile(test_inner=INNER)
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider", timeout=600)
    result.assert_outcomes(passed=1)
    seen = json.loads(probe.read_text())
    assert seen["site"].startswith("vt-")
    assert site_processes(seen["site"]) == []
    assert not Path(seen["dir"]).exists()
    figure("pytest plugin: a user's test file on volttron_instance (start, two agents, stop)",
           f"{result.duration:.1f} s")


@pytest.mark.skipif(os.geteuid() != 0, reason="run as a normal user, the test above already is that case")
def test_volttron_instance_as_a_normal_user(figure):
    """The same user's test file run by a normal user (the service user, with its own state folder as a user
    without root would have): the platform runs as that user, with no runuser in between."""
    from dr_ops.platformctl import repo_root

    folder = Path(tempfile.mkdtemp(prefix="vdr-user-run-"))   # pytest's own tmp folders are root's alone
    (folder / "test_inner.py").write_text(INNER + "\n\ndef test_not_root():\n    assert os.getuid() != 0\n")
    probe = folder / "probe.json"
    folder.chmod(0o777)
    home = pwd.getpwnam(SERVICE_USER).pw_dir
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home, "VDR_STATE": home,
           "VDR_REPO": str(repo_root()), "VDR_PLUGIN_PROBE": str(probe), "PYTHONDONTWRITEBYTECODE": "1"}
    t0 = time.monotonic()
    try:
        run = subprocess.run(["runuser", "-u", SERVICE_USER, "--", "env", *[f"{k}={v}" for k, v in env.items()],
                              sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "test_inner.py"],
                             cwd=folder, capture_output=True, text=True, timeout=600)
        seen = json.loads(probe.read_text()) if probe.exists() else {}
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "2 passed" in run.stdout, run.stdout[-2000:]
    assert site_processes(seen["site"]) == []
    assert not Path(seen["dir"]).exists()
    figure("pytest plugin as a normal user (start, two agents, stop)", f"{time.monotonic() - t0:.1f} s")
