"""dr.oadr's configuration: defaults, the keys it refuses (named), placeholder secrets on loopback only, the
2.0b section, and secrets never rendered."""

from __future__ import annotations

import json

import pytest

from dr_common.config import ConfigError
from dr_oadr_ven.config import parse_config
from dr_oadr_ven.state import StateFile

VTN = {"baseUrl": "http://127.0.0.1:8080/openadr3/3.1.0/", "clientId": "demo-ven",
       "clientSecret": "demo-ven-secret-change-me"}


def test_defaults():
    config = parse_config({"venId": "ven-demo", "vtn": VTN})
    assert config.vtn.base_url == "http://127.0.0.1:8080/openadr3/3.1.0"
    assert config.vtn.protocol == "oadr31" and config.vtn.notify == "poll" and config.vtn.poll_s == 10
    assert config.ven_name == "ven-demo" and config.programs == []
    assert config.limits.max_kw == 100 and config.limits.max_duration_s == 14400
    assert config.reports.types == ["USAGE", "BASELINE", "DELTA_USAGE", "OPERATING_STATE"]
    assert config.simple_levels_kw == [0, 1, 2, 3]


@pytest.mark.parametrize("raw,key", [
    ({"vtn": VTN}, "venId"),
    ({"venId": "bad id!", "vtn": VTN}, "venId"),
    ({"venId": "v", "vtn": {**VTN, "baseUrl": "ftp://x"}}, "vtn.baseUrl"),
    ({"venId": "v", "vtn": {**VTN, "pollS": 0}}, "vtn.pollS"),
    ({"venId": "v", "vtn": {**VTN, "notify": "carrier-pigeon"}}, "vtn.notify"),
    ({"venId": "v", "vtn": VTN, "simpleLevelsKw": [1, 2]}, "simpleLevelsKw"),
    ({"venId": "v", "vtn": VTN, "limits": {"maxKw": -1}}, "limits.maxKw"),
    ({"venId": "v", "vtn": VTN, "surprise": 1}, "surprise"),
    ({"venId": "v", "vtn": {"baseUrl": VTN["baseUrl"], "clientId": "c"}}, "vtn.clientSecret"),
    ({"venId": "v", "vtn": {"protocol": "oadr20b"}}, "oadr20b"),
])
def test_bad_values_are_refused_naming_the_key(raw, key):
    with pytest.raises(ConfigError) as exc:
        parse_config(raw)
    assert exc.value.key == key


def test_placeholder_secret_only_towards_a_loopback_vtn():
    remote = {**VTN, "baseUrl": "https://vtn.example.net/openadr3/3.1.0"}
    with pytest.raises(ConfigError) as exc:
        parse_config({"venId": "v", "vtn": remote})
    assert exc.value.key == "vtn.clientSecret" and "change-me" not in str(exc.value)
    real = parse_config({"venId": "v", "vtn": {**remote, "clientSecret": "s3cr3t-from-the-utility"}})
    assert "s3cr3t" not in repr(real) and "s3cr3t" not in str(real.model_dump())


def test_oadr20b_needs_only_its_section():
    config = parse_config({"venId": "v", "vtn": {"protocol": "oadr20b"},
                           "oadr20b": {"venName": "v", "vtnUrl": "http://127.0.0.1:8081/OpenADR2/Simple/2.0b"}})
    assert config.vtn.protocol == "oadr20b" and config.oadr20b["venName"] == "v"


def test_state_file_round_trip_and_a_corrupt_file_is_kept_aside(tmp_path):
    path = tmp_path / "state.json"
    state = StateFile(path).load()
    state.section("plans")["e1"] = {"revision": 3}
    state.save()
    assert StateFile(path).load().section("plans") == {"e1": {"revision": 3}}
    path.write_text("{not json")
    broken = StateFile(path).load()
    assert broken.section("plans") == {} and broken.load_error
    assert (tmp_path / "state.json.bad").read_text() == "{not json"
    path.write_text(json.dumps({"version": 1, "plans": []}))
    assert StateFile(path).load().load_error
