"""Fuzzing the REST API's writes: thousands of bad bodies, generated from the shared library's field
definitions, against the app with the real dr.vtn service in-process. Every one gets a 4xx naming a field,
none a 5xx, and nothing is written (the list endpoints and the VTN's own records are unchanged)."""

from __future__ import annotations

import json
import math
import string
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dr_common.payloads import EVENT_FIELDS, VEN_FIELDS
from dr_common.schema import Field, normalize_key
from tests.unit.test_web_harness import WebHarness

NOW = datetime.now(timezone.utc)
REGISTERED = "ven-1"
ALL_KEYS = {key for f in (*VEN_FIELDS, *EVENT_FIELDS) for key in f.keys()}

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
junk_keys = st.text(min_size=1, max_size=12).filter(lambda k: normalize_key(k) not in ALL_KEYS)


def _is_number(text: str) -> bool:
    try:
        float(text.strip())
    except ValueError:
        return False
    return True


def _is_time(text: str) -> bool:
    t = text.strip()
    if not t:
        return False
    if _is_number(t):
        return True
    try:
        datetime.fromisoformat(t[:-1] + "+00:00" if t.endswith(("Z", "z")) else t)
    except ValueError:
        return False
    return True


def bad_values(f: Field) -> st.SearchStrategy:
    """Values that no parser may accept for this field."""
    containers = st.lists(json_scalars, max_size=3) | st.dictionaries(st.text(max_size=5), json_scalars, max_size=3)
    if f.kind == "id":
        blanks = st.sampled_from(["", " ", "\t\n"])
        too_long = st.integers(65, 120).map(lambda n: "x" * n)
        bad_chars = st.text(alphabet=" /!@#$%^&*()[]{}é\u2603\u202e\x00", min_size=1, max_size=10).filter(
            lambda t: t.strip() != "")
        return st.booleans() | containers | blanks | too_long | bad_chars.map(lambda t: "a" + t + "b")
    if f.kind == "str":
        blanks = st.sampled_from(["", " ", "\t\n"])
        too_long = st.integers(f.max_length + 1, f.max_length + 50).map(lambda n: "x" * n)
        out = st.booleans() | containers | blanks | too_long
        if f.choices:
            out |= st.text(min_size=1, max_size=12).filter(
                lambda t: t.strip() and normalize_key(t.strip()) not in {normalize_key(c) for c in f.choices})
        if f.name in ("venId",):
            out |= st.text(alphabet=" /!@#$%^&*()[]{}é\u2603", min_size=1, max_size=10)
        return out
    if f.kind in ("float", "int"):
        words = st.text(max_size=12).filter(lambda t: not _is_number(t))
        specials = st.sampled_from(["nan", "NaN", "inf", "-Infinity", "1e999"])
        out = st.booleans() | containers | words | specials
        if f.minimum is not None:
            out |= st.floats(max_value=f.minimum, exclude_max=True, allow_nan=False, allow_infinity=False,
                             min_value=-1e12)
        if f.maximum is not None:
            out |= st.floats(min_value=f.maximum, exclude_min=True, allow_nan=False, allow_infinity=False,
                             max_value=1e15)
        if f.kind == "int":
            out |= st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6).filter(
                lambda x: x != int(x))
        return out
    if f.kind == "bool":
        return (containers | st.text(max_size=8).filter(lambda t: t.strip().lower() not in
                                                        {"true", "1", "yes", "on", "false", "0", "no", "off"})
                | st.integers().filter(lambda i: i not in (0, 1)))
    if f.kind == "time":
        return (st.booleans() | containers | st.text(max_size=30).filter(lambda t: not _is_time(t))
                | st.floats(min_value=1e15, max_value=1e300) | st.floats(min_value=-1e300, max_value=-1e15)
                | st.sampled_from(["9999-12-31T23:59:59Z", "0001-01-01T00:00:00+14:00", "10000-01-01", "1e400"]))
    if f.kind == "idlist":
        return (st.booleans() | st.integers() | st.dictionaries(st.text(max_size=5), json_scalars, max_size=2)
                | st.lists(st.booleans() | st.none() | st.just("") | st.just("a/b") | st.just("x\u202ey")
                           | st.floats() | st.lists(st.text(max_size=3), max_size=2), min_size=1, max_size=3))
    if f.kind == "strlist":
        return (st.booleans() | st.integers() | st.dictionaries(st.text(max_size=5), json_scalars, max_size=2)
                | st.lists(st.booleans() | st.none() | st.just("") | st.just("  ") | st.floats()
                           | st.lists(st.text(max_size=3), max_size=2), min_size=1, max_size=3))
    if f.kind == "dict":
        return st.booleans() | st.integers() | st.text(max_size=5) | st.lists(json_scalars, max_size=3)
    raise AssertionError(f.kind)


def key_variant(f: Field) -> st.SearchStrategy[str]:
    """The field's name or an alias, in camelCase, snake_case or another case."""
    names = st.sampled_from([f.name, *f.aliases])
    styles = st.sampled_from([lambda s: s, str.lower, str.upper,
                              lambda s: "".join("_" + c.lower() if c.isupper() else c for c in s).lstrip("_")])
    return st.builds(lambda n, style: style(n), names, styles)


def iso(offset_s: float) -> str:
    return (NOW + timedelta(seconds=offset_s)).isoformat()


VALID_VEN = {"venId": "ven-fuzz", "name": "fuzz", "site": "s", "group": "g", "maxShedKw": 3, "transport": "mqtt"}
VALID_EVENT = {"startTime": iso(3600), "endTime": iso(7200), "requestedReductionKw": 2.0, "name": "fuzz",
               "venIds": [REGISTERED], "priority": 1}


def mutated(base: dict, fields: tuple[Field, ...]) -> st.SearchStrategy[dict]:
    """A valid body with one field set to a value no parser may accept (under any of its key variants)."""
    def build(f: Field, key: str, value, junk: dict) -> dict:
        body = {k: v for k, v in base.items() if k != f.name}
        body.update(junk)
        body[key] = value
        return body
    return st.sampled_from([f for f in fields if f.name != "status" or f.choices]).flatmap(
        lambda f: st.builds(build, st.just(f), key_variant(f), bad_values(f),
                            st.dictionaries(junk_keys, json_values, max_size=3)))


def missing_required(fields: tuple[Field, ...]) -> st.SearchStrategy[dict]:
    return st.dictionaries(junk_keys | st.sampled_from([f.name for f in fields if not f.required]),
                           json_scalars, max_size=5).filter(
        lambda body: not any(normalize_key(k) in f.keys() for f in fields if f.required for k in body))


not_objects = json_values.filter(lambda v: not isinstance(v, dict)).map(json.dumps)
not_json = st.binary(max_size=64).filter(lambda b: not _decodes_to_object(b))


def _decodes_to_object(raw: bytes) -> bool:
    try:
        return isinstance(json.loads(raw), dict)
    except (ValueError, RecursionError):
        return False


def _event_semantics() -> st.SearchStrategy[dict]:
    """Bodies every field of which parses, refused for what they mean (some by dr.vtn itself)."""
    start = st.floats(min_value=-86400, max_value=86400)
    return st.one_of(
        st.builds(lambda s, d: {"startTime": iso(s), "endTime": iso(s - d), "kw": 1}, start,
                  st.floats(min_value=0, max_value=3600)),                                  # end before start
        st.builds(lambda s, d: {"startTime": iso(s - 7 * 86400), "durationS": d, "kw": 1}, start,
                  st.floats(min_value=1, max_value=86400)),                                 # over already
        st.builds(lambda s, d: {"startTime": iso(s), "endTime": iso(s + 60), "durationS": d, "kw": 1}, start,
                  st.floats(min_value=1, max_value=3600).filter(lambda d: abs(d - 60) > 0.01)),  # disagree
        st.builds(lambda s: {"startTime": iso(s + 90000), "durationS": 60}, start),        # no kW, no level
        st.builds(lambda v: {**VALID_EVENT, "venIds": v}, st.lists(
            st.text(alphabet=string.ascii_lowercase, min_size=1, max_size=8).map(lambda t: "u-" + t),
            min_size=1, max_size=3)),                                                       # unknown VENs
        st.just({**VALID_EVENT, "allVens": True}),                                          # all + venIds
        st.builds(lambda r: {**VALID_EVENT, "randomizeStartS": r}, st.floats(min_value=3600, max_value=3600)),
        st.just({**VALID_EVENT, "eventId": "evt-existing"}),                                # exists: 409
    )


offsets = st.integers(-1439, 1439).map(lambda m: timezone(timedelta(minutes=m)))
too_early = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(1969, 12, 31), timezones=offsets)
too_late = st.datetimes(min_value=datetime(9000, 1, 2), max_value=datetime(9999, 12, 31), timezones=offsets)
out_of_range = (too_early | too_late).map(lambda d: d.isoformat()) | st.sampled_from(
    ["0001-01-01T00:00:00+14:00", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59-14:00", "9999-12-31T23:59:59Z",
     -1, -62135596800, 253402300799000, "-1e10"])


def _extreme_times() -> st.SearchStrategy[dict]:
    """Times at and beyond what a datetime, an epoch float and ISO rendering can hold."""
    return st.one_of(
        st.builds(lambda s: {"startTime": s, "endTime": iso(3600), "kw": 1}, out_of_range),
        st.builds(lambda s, d: {"startTime": s, "durationS": d, "kw": 1}, out_of_range,
                  st.floats(min_value=1, max_value=7 * 86400)),
        st.builds(lambda e: {"startTime": iso(60), "endTime": e, "kw": 1}, out_of_range),
        st.builds(lambda d: {"startTime": "8999-12-31T23:59:59Z", "durationS": d, "kw": 1},
                  st.floats(min_value=2, max_value=7 * 86400)),
    )


EVENT_BODIES = st.one_of(not_json, not_objects.map(str.encode),
                         _extreme_times().map(lambda b: json.dumps(b).encode()),
                         missing_required(EVENT_FIELDS).map(lambda b: json.dumps(b).encode()),
                         mutated(VALID_EVENT, EVENT_FIELDS).map(lambda b: json.dumps(b).encode()),
                         _event_semantics().map(lambda b: json.dumps(b).encode()))
VEN_BODIES = st.one_of(not_json, not_objects.map(str.encode),
                       missing_required(VEN_FIELDS).map(lambda b: json.dumps(b).encode()),
                       mutated(VALID_VEN, VEN_FIELDS).map(lambda b: json.dumps(b).encode()))


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    harness = WebHarness(tmp_path_factory.mktemp("fuzz"))
    assert harness.post("/api/vens/", {"venId": REGISTERED, "transport": "bus"}).status_code == 201
    assert harness.post("/api/events/", {**VALID_EVENT, "eventId": "evt-existing"}).status_code == 201
    harness.baseline = harness.snapshot()
    harness.tally = {}
    yield harness
    harness.close()


def _check(web, path: str, raw: bytes) -> None:
    vens, events = len(web.vtn.vens), len(web.vtn.events)
    r = web.client.post(path, data=raw, headers=web.headers(), content_type="application/json")
    assert 400 <= r.status_code < 500, (r.status_code, raw[:300], r.get_data(as_text=True)[:300])
    error = r.get_json()
    assert set(error) == {"error", "field", "code"} and error["field"], error
    assert (len(web.vtn.vens), len(web.vtn.events)) == (vens, events), raw[:300]
    web.tally[r.status_code] = web.tally.get(r.status_code, 0) + 1


FUZZ = settings(max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck), database=None)


@FUZZ
@given(raw=EVENT_BODIES)
def test_bad_event_bodies(web, raw):
    _check(web, "/api/events/", raw)


@FUZZ
@given(raw=VEN_BODIES)
def test_bad_ven_bodies(web, raw):
    _check(web, "/api/vens/", raw)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(event_id=st.text(min_size=1, max_size=40).filter(lambda t: "/" not in t and t != "evt-existing"),
       raw=st.binary(max_size=32))
def test_stop_of_unknown_events(web, event_id, raw):
    from urllib.parse import quote

    _check(web, f"/api/events/{quote(event_id, safe='')}/stop", raw)


def test_nothing_was_written_and_the_mix_was_broad(web, figure):
    assert web.snapshot() == web.baseline
    total = sum(web.tally.values())
    figure("REST fuzz (in-process dr.vtn)", f"{total} bad bodies, statuses {dict(sorted(web.tally.items()))}")
    assert total >= 4000 and {400, 404, 409} <= set(web.tally)
    assert not math.isnan(total)
