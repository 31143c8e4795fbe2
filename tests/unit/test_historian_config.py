"""The historian's configuration: VOLTTRON's connection shapes, URLs, and errors that name the key."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
from dr_common.config import ConfigError
from dr_historian.config import HistorianConfig, mask_password, parse_config

REPO = Path(__file__).resolve().parents[2]


def test_defaults_to_sqlite_under_the_working_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = parse_config({})
    assert config.backend == "sqlite"
    assert config.url == f"sqlite:///{tmp_path}/data/historian.sqlite"
    assert config.mv.methods == ("meter-before", "caiso-10in10", "pjm-high4of5", "ven-reported")


def test_volttron_shapes_and_urls(monkeypatch):
    monkeypatch.setenv("SITE_STATE", "/srv/state")
    assert parse_config({"connection": {"type": "sqlite", "params": {"database": "$SITE_STATE/h.sqlite"}}}).url == \
        "sqlite:////srv/state/h.sqlite"
    pg = parse_config({"connection": {"type": "postgresql", "params": {
        "host": "db", "port": "5433", "dbname": "hist", "user": "u", "password": "p@ss"}}})
    assert (pg.backend, pg.url) == ("postgresql", "postgresql+psycopg2://u:p%40ss@db:5433/hist")
    assert pg.display_url == "postgresql+psycopg2://u:***@db:5433/hist"
    assert parse_config({"connection": {"url": "postgres://x@h/d"}}).url == "postgresql+psycopg2://x@h/d"
    assert mask_password("sqlite:////a/b") == "sqlite:////a/b"


@pytest.mark.parametrize("raw, key", [
    ({"connection": "sqlite"}, "connection"),
    ({"connection": {"type": "mysql"}}, "connection.type"),
    ({"connection": {"url": "mysql://x"}}, "connection.url"),
    ({"connection": {"type": "sqlite", "params": {"database": ":memory:"}}}, "connection.params.database"),
    ({"connection": {"type": "postgresql", "params": {"host": "h"}}}, "connection.params.dbname"),
    ({"connection": {"type": "sqlite", "params": {"database": "$NO_SUCH_VAR_X/h.sqlite"}}},
     "connection.params.database"),
    ({"connection": {"type": "postgresql", "params": {"dbname": "d", "port": "x"}}}, "connection.params.port"),
    ({"connect_timeout_s": 0}, "connect_timeout_s"),
    ({"record_dr": "yes"}, "record_dr"),
    ({"mv": {"timezone": "Mars/Olympus"}}, "mv.timezone"),
    ({"mv": {"interval_minutes": 7}}, "mv.interval_minutes"),
    ({"mv": {"holidays": ["July 4"]}}, "mv.holidays"),
    ({"mv": {"methods": ["guess"]}}, "mv.methods"),
    ({"mv": {"meter_topics": [3]}}, "mv.meter_topics"),
    ({"mv": {"intervall_minutes": 15}}, "mv.intervall_minutes"),
    ({"query": {"default_count": 0}}, "query.default_count"),
    ({"query": {"default_count": 500, "max_count": 100}}, "query.default_count"),
    ({"query": {"max_count": "many"}}, "query.max_count"),
    ({"connection": {"type": "postgresql", "params": {"dbname": "d", "password": 12345678}}},
     "connection.params.password"),
])
def test_bad_values_name_the_key(raw, key):
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    assert info.value.key == key


def test_mv_options():
    mv = parse_config({"mv": {"timezone": "America/Los_Angeles", "interval_minutes": 60, "holidays": ["2026-07-03"],
                              "meter_topics": ["devices/demo/meter/PowerKw"], "methods": ["meter-before"]}}).mv
    assert mv.holidays == (date(2026, 7, 3),) and mv.meter_topics == ("demo/meter/PowerKw",)
    assert (mv.interval_minutes, mv.methods) == (60, ("meter-before",))


@pytest.mark.parametrize("path", ["agents/historian/config.json", *sorted(
    str(p.relative_to(REPO)) for p in (REPO / "platform-config" / "sites").glob("*/historian.json"))])
def test_shipped_configs_are_valid(path, monkeypatch):
    monkeypatch.setenv("VOLTTRON_HOME", "/var/lib/x/vhome")
    parse_config(json.loads((REPO / path).read_text()))


def test_the_one_config_error_and_pydantic_model():
    config = parse_config({"connectTimeoutS": 2, "recordDr": False, "mv": {"intervalMinutes": 30},
                           "query": {"defaultCount": 10, "maxCount": 50}, "retry_period": 5.0})
    assert isinstance(config, HistorianConfig)
    assert (config.connect_timeout_s, config.record_dr, config.mv.interval_minutes) == (2.0, False, 30)
    assert (config.query.default_count, config.query.max_count) == (10, 50)
    assert parse_config({}).query.default_count == 1000 and parse_config({}).query.max_count == 10_000


def test_a_password_never_shows():
    config = parse_config({"connection": {"type": "postgresql", "params": {
        "dbname": "d", "user": "u", "password": "hunter2-secret"}}})
    assert "hunter2-secret" in config.url  # what the engine needs
    for text in (repr(config), str(config), config.display_url, repr(config.connection)):
        assert "hunter2-secret" not in text
    with pytest.raises(ConfigError) as info:
        parse_config({"connection": {"type": "postgresql", "params": {"dbname": "d", "password": 99887766}}})
    assert "99887766" not in str(info.value)
    with pytest.raises(ConfigError) as info:
        parse_config({"connection": {"url": "mysql://u:hunter2-secret@h/d"}})
    assert "hunter2-secret" not in str(info.value)
