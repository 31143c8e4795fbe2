"""The project's pytest plugin (dr_testing.plugin, entry point pytest11 `volttron_dr`) as a user meets it: a test
file of their own, run by pytest in a fresh process with nothing but the installed plugin, gets a real platform
from `volttron_instance`, two client agents with credentials of their own from `build_agent` that reach each
other over the bus and answer RPC; afterwards no process of that platform is left and its folder is gone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dr_testing.platform import site_processes

pytestmark = pytest.mark.integration
pytest_plugins = ["pytester"]

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
