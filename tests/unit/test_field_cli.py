"""`scripts/devices start|stop|status`: one background process per site, free ports, loopback only, no process
left after stop (a real process, in a temporary state folder)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from dr_tools.devices import cli

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "platform-config" / "sites" / "field" / "devices.json"


@pytest.fixture
def state(tmp_path, monkeypatch):
    monkeypatch.setenv("VDR_STATE", str(tmp_path))
    yield tmp_path
    cli.stop("unit-field")


def test_start_status_stop(state):
    ports = cli.start("unit-field", CONFIG, 0, 0, 0)
    assert ports["host"] == "127.0.0.1" and ports["modbus"] > 0 and ports["control"] > 0
    assert ports["bacnet"]["water_heater"] == ports["bacnet"]["thermostat"] + 1
    pid = cli.running_pid("unit-field")
    assert pid == ports["pid"]
    assert cli.start("unit-field", CONFIG, 0, 0, 0) == ports          # already running: the same process
    status = cli.control(ports, {"op": "status"})
    assert status["ok"] and set(status["devices"]) == {"battery", "meter", "ev_charger", "thermostat",
                                                        "water_heater"}
    listening = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True).stdout
    assert f"127.0.0.1:{ports['modbus']}" in listening and f"0.0.0.0:{ports['modbus']}" not in listening
    assert cli.stop("unit-field") is True
    assert cli.running_pid("unit-field") is None
    with pytest.raises((ProcessLookupError, ChildProcessError)):
        os.kill(pid, 0)
        os.waitpid(pid, 0)
    assert cli.stop("unit-field") is False


def test_a_bad_config_fails_start_with_the_log_named(state, tmp_path):
    bad = tmp_path / "devices.json"
    bad.write_text('{"site": "x", "devices": []}')
    with pytest.raises(RuntimeError, match="devices.log"):
        cli.start("unit-field", bad, 0, 0, 0)
    assert "devices: expected a non-empty list" in (state / "devices" / "unit-field" / "devices.log").read_text()


def test_the_cli_refuses_a_bad_site_name(capsys):
    with pytest.raises(SystemExit):
        cli.main(["status", "--site", "../etc"])
    assert "--site" in capsys.readouterr().err
