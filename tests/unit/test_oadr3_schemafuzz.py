"""The OpenADR 3.1 API against bodies generated from the spec's own request schemas (openadr3.yaml, walked by a
small generator below: objects with their required and some optional properties, arrays, strings with their
lengths and enums, durations and date-times, numbers, nullable values): whatever the spec lets a client send,
the VTN answers without a 5xx; a refusal is a spec problem and writes nothing; an accepted object reads back."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.test_oadr3_fuzz import Fuzz, _is_problem

SPEC = Path(__file__).resolve().parents[2] / "web" / "dr_web" / "oadr3" / "openadr3.yaml"
SCHEMAS = yaml.safe_load(SPEC.read_text())["components"]["schemas"]
NOW = datetime.now(timezone.utc)

durations = st.sampled_from(["PT1H", "PT15M", "PT30S", "P1D", "PT0S", "P9999Y", "P1W", "PT0.5S", "P1M", "-PT1H",
                             "P1Y"])
date_times = st.sampled_from(["0001-01-01", "0001-01-01T00:00:00Z"]) | st.integers(-86400, 40 * 86400).map(
    lambda s: (NOW + timedelta(seconds=s)).isoformat())
ids = st.sampled_from(["default", "evt-none", "ven-none", "x"]) | st.from_regex(r"\A[a-zA-Z0-9_-]{1,20}\Z")
words = st.text(min_size=1, max_size=20) | st.sampled_from(["SIMPLE", "DISPATCH_SETPOINT_RELATIVE", "USAGE",
                                                            "IMPORT_CAPACITY_LIMIT", "ven-1", "g1"])


def strategy(schema: dict, depth: int = 0) -> st.SearchStrategy:
    """Values the (OpenAPI 3.0) schema accepts, for the subset of the language openadr3.yaml uses."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        if name == "duration":
            base = durations
        elif name == "dateTime":
            base = date_times
        elif name == "objectID":
            base = ids
        else:
            base = st.deferred(lambda: strategy(SCHEMAS[name], depth + 1))
        return base | st.none() if schema.get("nullable") else base
    if "allOf" in schema:
        parts = [strategy(part, depth + 1) for part in schema["allOf"]]
        return st.tuples(*parts).map(lambda dicts: {k: v for d in dicts if isinstance(d, dict) for k, v in d.items()})
    if "oneOf" in schema or "anyOf" in schema:
        return st.one_of([strategy(part, depth + 1) for part in schema.get("oneOf") or schema["anyOf"]])
    kind = schema.get("type", "object" if "properties" in schema else None)
    base: st.SearchStrategy
    if "enum" in schema:
        base = st.sampled_from(schema["enum"])
    elif kind == "object":
        props = schema.get("properties", {})
        required = [name for name in schema.get("required", []) if name in props]
        optional = [name for name in props if name not in required]
        if depth > 6:
            optional = []
        base = st.fixed_dictionaries({name: strategy(props[name], depth + 1) for name in required},
                                     optional={name: strategy(props[name], depth + 1) for name in optional})
    elif kind == "array":
        base = st.lists(strategy(schema.get("items", {}), depth + 1), max_size=2 if depth < 4 else 0)
    elif kind == "string":
        base = words.filter(lambda t: len(t) >= schema.get("minLength", 0)
                            and len(t) <= schema.get("maxLength", 10_000))
        if schema.get("format") == "uri":
            base = st.sampled_from(["http://127.0.0.1:9/cb", "https://example.com/x", "ftp://x", "x"])
    elif kind == "integer":
        base = st.integers(schema.get("minimum", -5), schema.get("maximum", 1000))
    elif kind == "number":
        base = st.floats(-100, 100, allow_nan=False)
    elif kind == "boolean":
        base = st.booleans()
    else:
        base = st.none() | st.booleans() | st.integers(-3, 3) | words
    return base | st.none() if schema.get("nullable") else base


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory):
    f = Fuzz(tmp_path_factory.mktemp("oadr3schemafuzz"))
    yield f
    f.close()


CASES = [("programs", "programRequest", "bl"), ("events", "eventRequest", "bl"),
         ("subscriptions", "subscriptionRequest", "ven"), ("vens", "VenVenRequest", "ven"),
         ("vens", "BlVenRequest", "bl"), ("resources", "BlResourceRequest", "bl"),
         ("reports", "reportRequest", "ven")]


@pytest.mark.parametrize("kind, schema_name, who", CASES)
def test_spec_shaped_bodies_never_5xx(fuzz, kind, schema_name, who):
    statuses: dict[int, int] = {}

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(body=strategy(SCHEMAS[schema_name]))
    def run(body: Any) -> None:
        before = fuzz.snapshot()
        response = fuzz.send("POST", f"/{kind}", who, body)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        assert response.status_code < 500, (body, response.get_json())
        if response.status_code >= 400:
            assert _is_problem(response, response.status_code)
            assert fuzz.snapshot() == before
        else:
            made = response.get_json()
            assert fuzz.send("GET", f"/{kind}/{made['id']}", who).status_code == 200
            fuzz.send("DELETE", f"/{kind}/{made['id']}", who)

    run()
    print(f"\n{kind} from {schema_name} as {who}: statuses {dict(sorted(statuses.items()))}")
    assert sum(statuses.values()) >= 100
