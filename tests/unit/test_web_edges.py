"""The REST API's edges against an attacker: identifiers checked before anything else, strict JSON in and
out (no NaN, no Infinity, no 500 on huge numbers), and no upstream or internal detail (SQL, parameters,
exception text) in an answer to a client."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import pytest

from dr_common import topics
from tests.unit.test_web_harness import WebHarness


@pytest.fixture
def web(tmp_path):
    harness = WebHarness(tmp_path)
    yield harness
    harness.close()


def strict_json(text: str) -> Any:
    def refuse(name: str) -> None:
        raise AssertionError(f"{name} in a response")

    return json.loads(text, parse_constant=refuse,
                      parse_int=lambda t: (int(t) if len(t) < 309 else refuse(f"{len(t)}-digit integer")))


BAD_IDS = ["a\x00b", "evt\u202e", "a" * 65, "-leading", "ven 1", "ven\n", "x;y", "%2e%2e"]


# --- identifiers --------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", BAD_IDS)
def test_ids_in_urls_are_checked_before_anything_else(web, bad):
    from urllib.parse import quote

    q = quote(bad, safe="")
    checks = [("GET", f"/api/vens/{q}", "venId"), ("GET", f"/api/events/{q}", "eventId"),
              ("POST", f"/api/events/{q}/stop", "eventId"), ("GET", f"/api/events/{q}/metrics", "eventId"),
              ("GET", f"/api/events/{q}/performance", "eventId"), ("GET", f"/api/telemetry/vens/{q}", "venId"),
              ("GET", f"/api/telemetry/vens/{q}/loads", "venId")]
    for method, path, field in checks:
        calls = len(web.gateway.calls)
        r = web.client.open(path, method=method, headers=web.headers())
        assert r.status_code == 400, (path, r.status_code)
        assert r.json["field"] == field and r.json["code"] == "invalid", (path, r.json)
        assert len(web.gateway.calls) == calls, f"{path} reached a peer"


def test_a_group_filter_follows_the_identifier_rule(web):
    r = web.get("/api/vens/?group=a%2Fb")
    assert r.status_code == 400 and r.json["field"] == "group"
    assert web.get("/api/vens/?group=g-1").status_code == 200


@pytest.mark.parametrize("field,value", [("eventId", "a/b"), ("eventId", "x" * 65), ("venIds", ["ven\u202e"]),
                                         ("groups", ["g\x00"]), ("programId", "p/1")])
def test_ids_in_bodies_are_400_naming_the_field(web, field, value):
    body = {"startTime": "2030-01-01T00:00:00Z", "durationS": 60, "requestedReductionKw": 1, field: value}
    r = web.post("/api/events/", body)
    assert r.status_code == 400 and r.json["field"] == field, r.json


# --- strict JSON in -----------------------------------------------------------------------------------
@pytest.mark.parametrize("raw", [b'{"venId": "v", "maxShedKw": NaN}', b'{"venId": "v", "maxShedKw": Infinity}',
                                 b'{"venId": "v", "maxShedKw": 1e400}', b'{"venId": "v", "maxShedKw": 1' + b"0" * 400
                                 + b"}", b'{"venId": "v", "x": 1' + b"0" * 4300 + b"}",
                                 b'{"venId": "v", "nested": {"a": [NaN]}}'])
def test_non_finite_and_huge_numbers_in_a_body_are_400(web, raw):
    r = web.post("/api/vens/", raw=raw)
    assert r.status_code == 400 and r.json["field"] == "<payload>" and r.json["code"] == "invalid", r.json
    assert web.get("/api/vens/").json == []


# --- strict JSON out ----------------------------------------------------------------------------------
def _answer(web, method: str, result: Any) -> None:
    real = web.gateway.call

    def call(identity: str, name: str, *args: Any, timeout: float, **kwargs: Any) -> Any:
        if name == method:
            return result
        return real(identity, name, *args, timeout=timeout, **kwargs)

    web.gateway.call = call


def test_non_finite_and_huge_numbers_from_upstream_are_null_and_counted(web):
    _answer(web, "list_vens", [{"venId": "ven-1", "status": "online", "online": True, "maxShedKw": float("nan"),
                                "usedPowerKw": float("inf"), "shedPowerKw": 10 ** 400,
                                "nested": [{"x": -float("inf")}, 10 ** 5000]}])
    r = web.get("/api/vens/")
    assert r.status_code == 200
    (ven,) = strict_json(r.get_data(as_text=True))
    assert ven["maxShedKw"] is None and ven["usedPowerKw"] is None and ven["shedPowerKw"] is None
    assert ven["nested"] == [{"x": None}, None]
    assert web.get("/api/health").json["valuesDropped"] == 5
    dash = web.get("/api/dashboard")
    assert dash.status_code == 200 and strict_json(dash.get_data(as_text=True))["vens"][0]["maxShedKw"] is None


def test_a_nan_that_reaches_a_response_is_sent_as_null_not_invalid_json(web):
    web.live.latest["ven-x"] = {"venId": "ven-x", "usedPowerKw": float("nan"), "loads": {"a": [float("inf")]}}
    r = web.get("/api/telemetry/latest")
    assert r.status_code == 200
    assert strict_json(r.get_data(as_text=True)) == {"ven-x": {"venId": "ven-x", "usedPowerKw": None,
                                                               "loads": {"a": [None]}}}
    assert math.isnan(web.live.latest["ven-x"]["usedPowerKw"])  # the live state itself is not altered
    assert web.get("/api/health").json["valuesDropped"] == 2


def test_telemetry_with_nan_in_loads_never_reaches_latest(web):
    web.live.on_message("dr/telemetry/ven-1", {"usedPowerKw": 1.0, "loads": {"ev": {"powerKw": float("nan")}}})
    web.live.on_message("dr/telemetry/ven-1", {"usedPowerKw": 1.0, "surprise": float("nan")})
    r = web.get("/api/telemetry/latest")
    assert r.status_code == 200 and web.live.rejected >= 1
    strict_json(r.get_data(as_text=True))


# --- no detail of an upstream or internal failure to the client --------------------------------------
SQL = ("(psycopg2.errors.UndefinedTable) relation \"dr_commands\" does not exist [SQL: SELECT * FROM dr_commands "
       "WHERE event_id = %(event_id)s] [parameters: {'event_id': 'evt-1', 'password': 'hunter2'}]")


def _error_id(body: dict) -> str:
    match = re.search(r"error id ([0-9a-f]{12})", body["error"])
    assert match, body
    return match.group(1)


def test_a_database_error_upstream_is_a_generic_answer_with_an_id(web, caplog):
    web.historian.event_performance = lambda event_id: {"error": SQL, "field": "<internal>", "code": "internal"}
    r = web.get("/api/events/evt-1/performance")
    assert r.status_code == 500 and r.json["code"] == "internal"
    text = r.get_data(as_text=True)
    assert "SELECT" not in text and "hunter2" not in text and "dr_commands" not in text
    ref = _error_id(r.json)
    assert any(ref in rec.getMessage() and "SELECT" in rec.getMessage() for rec in caplog.records)


def test_an_exception_raised_upstream_is_a_generic_502_with_an_id(web, caplog):
    from dr_web.gateway import PeerFailed

    def boom(identity: str, name: str, *args: Any, timeout: float, **kwargs: Any) -> Any:
        raise PeerFailed(identity, name, f"OperationalError: {SQL}")

    web.gateway.call = boom
    r = web.get("/api/events/evt-1/performance")
    assert r.status_code == 502 and "SELECT" not in r.get_data(as_text=True) and "hunter2" not in r.json["error"]
    ref = _error_id(r.json)
    assert any(ref in rec.getMessage() and "hunter2" in rec.getMessage() for rec in caplog.records)
    health = web.get("/api/health").json
    assert "SELECT" not in json.dumps(health)


def test_an_unknown_error_code_upstream_carries_no_detail(web):
    _answer(web, "get_event", {"error": SQL, "field": "eventId", "code": "db_failure"})
    r = web.get("/api/events/evt-1")
    assert r.status_code == 502 and "SELECT" not in r.get_data(as_text=True)
    _error_id(r.json)


def test_a_refusal_of_dr_vtn_still_comes_through_unchanged(web):
    r = web.get("/api/events/evt-none")
    assert r.status_code == 404 and r.json == {"error": "eventId: no event 'evt-none'", "field": "eventId",
                                               "code": "not_found"}


def test_a_500_in_dr_web_itself_says_no_more_than_an_id(web, caplog):
    def explode(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"cannot read {SQL}")

    web.app.extensions["dr_web"].upstream.list_events = explode
    r = web.get("/api/events/")
    assert r.status_code == 500 and r.json["code"] == "internal" and "SELECT" not in r.get_data(as_text=True)
    ref = _error_id(r.json)
    assert any(ref in rec.getMessage() for rec in caplog.records)
    page = web.get("/events")
    assert page.status_code == 200


def test_peers_are_called_and_rpcs_exported_by_name_constants():
    """No RPC name is a string literal in dr.web: every call to a peer and every export uses a constant."""
    import ast
    from pathlib import Path

    import dr_web

    root = Path(dr_web.__file__).parent
    literal_calls, bare_exports = [], []
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr in ("vtn", "_call", "call", "_expect") and node.args:
                method = node.args[1] if node.func.attr in ("_call", "call", "_expect") and len(node.args) > 1 \
                    else node.args[0]
                if node.func.attr in ("_call", "call", "_expect") and isinstance(node.args[0], ast.Constant):
                    literal_calls.append(f"{path.name}:{node.lineno}")
                if isinstance(method, ast.Constant) and isinstance(method.value, str):
                    literal_calls.append(f"{path.name}:{node.lineno}")
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for deco in node.decorator_list:
                    if isinstance(deco, ast.Attribute) and deco.attr == "export":
                        bare_exports.append(f"{path.name}:{node.lineno}")
                    if isinstance(deco, ast.Call) and getattr(deco.func, "attr", None) == "export" \
                            and any(isinstance(a, ast.Constant) for a in deco.args):
                        bare_exports.append(f"{path.name}:{node.lineno}")
    assert not literal_calls and not bare_exports, (literal_calls, bare_exports)
    assert topics.WebRpc.HEALTH == "health" and topics.WebRpc.LATEST_TELEMETRY == "latest_telemetry"
