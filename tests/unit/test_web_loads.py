"""Which loads a VEN shed: the VEN page's rows from the `loads` of its telemetry, in the shape the VEN
documents (agents/ven_load_control/README.md) and in the shape older VENs send; the API and the page."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from dr_web import loadview, shapes
from tests.unit.test_web_harness import WebHarness

WEB = Path(__file__).resolve().parents[2] / "web" / "dr_web"

# the README's example, and one load of every other kind the VEN documents
DOCUMENTED = {
    "ev_charger": {"kind": "ev_charger", "priority": 10, "state": "shed", "powerKw": 3.0, "shedKw": 4.2,
                   "capacityKw": 4.2, "action": {"type": "powerLimit", "points": {"PowerLimitKw": 3.0},
                                                 "from": {"PowerLimitKw": 7.2}, "since": "2026-12-05T14:00:00Z",
                                                 "restoring": False},
                   "constraint": {"type": "departureEnergy", "limiting": True, "energyNeededKwh": 20.0,
                                  "departureHours": 6.0, "minKw": 3.0,
                                  "text": "keeps 3.0 kW to add 20.0 kWh by departure in 6.0 h"},
                   "override": False, "optOut": False, "critical": False, "blocked": None,
                   "setPoints": {"PowerLimitKw": 3.0}},
    "hvac": {"kind": "hvac", "priority": 30, "state": "shed", "powerKw": 1.2, "shedKw": 1.5, "capacityKw": 3.0,
             "action": {"type": "setpointRaise", "points": {"CoolingSetpointC": 25.0}, "offsetC": 1.0,
                        "from": {"CoolingSetpointC": 24.0}, "since": "2026-12-05T14:00:00Z", "restoring": False},
             "constraint": {"type": "comfortBand", "limiting": False, "zoneTempC": 24.6, "maxZoneTempC": 27.0,
                            "maxOffsetC": 1.0, "text": "zone 24.6 C of 27.0 C max; 1.0 C of offset left"},
             "override": False, "optOut": False, "critical": False, "blocked": None,
             "setPoints": {"CoolingSetpointC": 25.0}},
    "water_heater": {"kind": "water_heater", "priority": 20, "state": "limited", "powerKw": 4.5, "shedKw": 0.0,
                     "capacityKw": 0.0, "action": None,
                     "constraint": {"type": "tankTemperature", "limiting": True, "tankTempC": 44.0,
                                    "minTankTempC": 45.0, "text": "tank at 44.0 C, minimum 45.0 C"},
                     "override": False, "optOut": False, "critical": False, "blocked": "tank at 44.0 C, minimum 45.0 C",
                     "setPoints": {}},
    "battery": {"kind": "battery", "priority": 50, "state": "override", "powerKw": 0.0, "shedKw": 0.0,
                "capacityKw": 0.0, "action": None,
                "constraint": {"type": "reserve", "limiting": False, "socPercent": 60, "reserveSocPercent": 20,
                               "maxDischargeKw": 5.0, "text": "60 % charged, reserve 20 %"},
                "override": True, "optOut": False, "critical": False, "blocked": None, "setPoints": {}},
    "panel.Fridge": {"kind": "circuit", "priority": 40, "state": "critical", "powerKw": 0.2, "shedKw": 0.0,
                     "capacityKw": 0.0, "action": None, "constraint": {"type": "critical", "limiting": True,
                                                                         "text": "critical circuit"},
                     "override": False, "optOut": False, "critical": True, "blocked": None, "setPoints": {}},
}

# what the VEN sent before it documented the shape (agents/ven_load_control engine.telemetry)
OLDER = {"ev_charger": {"kind": "ev_charger", "priority": 10, "powerKw": 3.0, "shedKw": 4.2, "capacityKw": 4.2,
                        "setPoints": {"PowerLimitKw": 3.0}},
         "water_heater": {"kind": "water_heater", "priority": 20, "powerKw": 4.5, "shedKw": 0.0, "capacityKw": 0.0,
                          "blocked": "tank at 44.0 C, minimum 45.0 C"},
         "battery": {"kind": "battery", "priority": 50, "powerKw": 0.0, "shedKw": 0.0, "capacityKw": 0.0,
                     "override": True},
         "panel": {"kind": "panel", "priority": 40, "powerKw": 0.2, "shedKw": 0.0, "capacityKw": 0.0,
                   "critical": True}}


def telemetry(loads: dict, **extra) -> dict:
    return {"venId": "ven-demo", "ts": "2026-12-05T14:00:05Z", "usedPowerKw": 2.0, "shedPowerKw": 5.7,
            "requestedReductionKw": 5.5, "baselinePowerKw": 7.7, "eventId": "evt-1", "loads": loads, **extra}


def test_documented_shape_gives_power_action_amount_constraint_and_override_per_load():
    doc = loadview.ven_loads(telemetry(DOCUMENTED), fresh=True)
    assert tuple(doc) == tuple(shapes.VEN_LOADS)
    rows = {r["load"]: r for r in doc["loads"]}
    assert [r["load"] for r in doc["loads"]] == ["ev_charger", "water_heater", "hvac", "panel.Fridge", "battery"]
    for row in doc["loads"]:
        assert tuple(row) == tuple(shapes.LOAD_ROW)
    ev = rows["ev_charger"]
    assert (ev["state"], ev["powerKw"], ev["shedKw"], ev["actionType"]) == ("shed", 3.0, 4.2, "powerLimit")
    assert ev["action"] == "power limit; PowerLimitKw 7.2 -> 3"
    assert ev["constraintType"] == "departureEnergy" and ev["limiting"] and "by departure" in ev["constraint"]
    hvac = rows["hvac"]
    assert hvac["action"] == "setpoint raised; CoolingSetpointC 24 -> 25" and hvac["constraintType"] == "comfortBand"
    assert not hvac["limiting"]
    wh = rows["water_heater"]
    assert wh["state"] == "limited" and wh["constraintType"] == "tankTemperature" and wh["action"] is None
    assert rows["battery"]["override"] and rows["battery"]["constraintType"] == "reserve"
    assert rows["panel.Fridge"]["critical"] and rows["panel.Fridge"]["state"] == "critical"


def test_an_opted_out_ven_marks_every_load():
    doc = loadview.ven_loads(telemetry(DOCUMENTED, optOut=True), fresh=False)
    assert doc["optOut"] and not doc["online"] and all(r["optOut"] for r in doc["loads"])


def test_the_older_shape_is_shown_too():
    rows = {r["load"]: r for r in loadview.ven_loads(telemetry(OLDER), fresh=True)["loads"]}
    assert rows["ev_charger"]["state"] == "shed" and rows["ev_charger"]["action"] == "PowerLimitKw = 3"
    assert rows["water_heater"]["state"] == "limited" and rows["water_heater"]["limiting"]
    assert rows["water_heater"]["constraint"] == "tank at 44.0 C, minimum 45.0 C"
    assert rows["battery"]["state"] == "override" and rows["panel"]["state"] == "critical"


@pytest.mark.parametrize("junk", [{"ev": "not an object"}, {"ev": {"powerKw": "lots", "state": "exploded",
                                                                    "action": ["x"], "constraint": 3}},
                                  {"ev": {"priority": True, "action": {"points": {"p": {"deep": 1}}}}}])
def test_wrong_types_are_left_out_never_raised(junk):
    doc = loadview.ven_loads(telemetry(junk), fresh=True)
    for row in doc["loads"]:
        assert row["state"] in shapes.LOAD_STATES and row["powerKw"] is None


@pytest.fixture
def web(tmp_path):
    harness = WebHarness(tmp_path)
    yield harness
    harness.close()


def test_the_api_and_the_page_of_a_ven(web):
    web.post("/api/vens/", {"venId": "ven-demo", "transport": "bus"})
    web.live.on_message("dr/telemetry/ven-demo", telemetry(DOCUMENTED))
    r = web.get("/api/telemetry/vens/ven-demo/loads")
    assert r.status_code == 200 and r.json["venId"] == "ven-demo" and r.json["online"]
    assert [row["load"] for row in r.json["loads"]][:2] == ["ev_charger", "water_heater"]
    assert web.get("/api/telemetry/vens/ven-other/loads").status_code == 404
    page = web.get("/vens/ven-demo")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and 'id="load-table"' in html and 'data-ven-id="ven-demo"' in html
    assert web.get("/static/ven.js").status_code == 200
    assert web.get("/vens/bad%20id").status_code == 400


def test_every_public_function_has_a_docstring_and_no_module_is_over_500_lines():
    missing = []
    for path in WEB.rglob("*.py"):
        text = path.read_text()
        assert len(text.splitlines()) <= 500, path
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef):
                assert (node.end_lineno or 0) - node.lineno < 400, (path, node.name)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
                if ast.get_docstring(node) is None:
                    missing.append(f"{path.name}:{node.name}")
    assert not missing, missing
