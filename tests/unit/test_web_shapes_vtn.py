"""dr.vtn's answers as dr.web passes them on are exactly what `dr_web.shapes` declares (and the OpenAPI document
serves): every key declared, every value of the declared type, no key the declaration lacks."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from dr_tools.webharness import WebHarness
from dr_web.shapes import SCHEMAS
from jsonschema import Draft202012Validator

STRICT = ("Ven", "Event", "EventMetrics", "VenParticipation")


def _closed(schema: Any) -> Any:
    """The schema with every object that lists properties closed to other keys."""
    if isinstance(schema, dict):
        out = {k: _closed(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_closed(v) for v in schema]
    return schema


def _validator(name: str) -> Draft202012Validator:
    schemas = copy.deepcopy(SCHEMAS)
    for strict in STRICT:
        schemas[strict] = _closed(schemas[strict])
    return Draft202012Validator({"$ref": f"#/components/schemas/{name}", "components": {"schemas": schemas}})


@pytest.fixture(scope="module")
def answers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    web = WebHarness(tmp_path_factory.mktemp("shapes"))
    try:
        assert web.post("/api/vens/", {"venId": "ven-shape", "name": "n", "site": "s", "group": "g",
                                       "maxShedKw": 3, "transport": "mqtt"}).status_code == 201
        start = datetime.now(timezone.utc) + timedelta(hours=1)
        created = web.post("/api/events/", {"startTime": start.isoformat(), "durationS": 3600,
                                            "requestedReductionKw": 2, "venIds": ["ven-shape"], "name": "shape"})
        assert created.status_code == 201
        event_id = created.get_json()["eventId"]
        return {"Ven": web.get("/api/vens/ven-shape").get_json(), "Event": web.get(f"/api/events/{event_id}").get_json(),
                "EventMetrics": web.get(f"/api/events/{event_id}/metrics").get_json(),
                "registration": created.get_json()}
    finally:
        web.close()


@pytest.mark.parametrize("name", ["Ven", "Event", "EventMetrics"])
def test_the_answer_is_what_the_declaration_says(answers: dict[str, Any], name: str) -> None:
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in _validator(name).iter_errors(answers[name])]
    assert not errors, errors


def test_a_drifted_answer_fails() -> None:
    errors = list(_validator("Ven").iter_errors({"venId": "v1", "status": "online", "online": True, "extra": 1}))
    assert errors and "extra" in errors[0].message
