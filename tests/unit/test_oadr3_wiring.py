"""The OpenADR 3.1 API as dr.web serves it: the `openadr3` section of dr.web's config (clients, loopback-only
placeholders, never the secret in an error), the app serving /openadr3/3.1.0 only when it is configured, spec
problems for unknown paths, and the demo site's shipped clients."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dr_common import topics
from dr_tools.webharness import ServiceGateway
from dr_web.app import create_app
from dr_web.config import ConfigError, parse_config
from dr_web.livestate import LiveState

REPO = Path(__file__).resolve().parents[2]
CLIENTS = {"clients": [{"clientId": "bl", "clientSecret": "bl-secret-change-me", "role": "bl"}]}


def app_of(raw: dict):
    config = parse_config(raw)
    return create_app(config, LiveState(), ServiceGateway({}), lambda: {"identity": topics.WEB_IDENTITY}).test_client()


def test_placeholder_client_secret_only_on_loopback():
    assert parse_config({"host": "127.0.0.1", "openadr3": CLIENTS}).openadr3 is not None
    with pytest.raises(ConfigError) as info:
        parse_config({"host": "0.0.0.0", "openadr3": CLIENTS})
    assert info.value.key == "openadr3.clients.0.clientSecret" and "change-me" not in str(info.value)
    with pytest.raises(ConfigError) as info:
        parse_config({"openadr3": {"clients": [{"clientId": "v", "clientSecret": "a-long-secret-1",
                                                "role": "ven"}]}})
    assert info.value.key.startswith("openadr3.clients.0") and "a-long-secret-1" not in str(info.value)


def test_served_only_when_configured_and_unknown_paths_are_problems():
    without = app_of({})
    assert without.get("/openadr3/3.1.0/auth/server").status_code == 404
    served = app_of({"openadr3": CLIENTS})
    info = served.get("/openadr3/3.1.0/auth/server")
    assert info.status_code == 200 and info.json["tokenURL"].endswith("/openadr3/3.1.0/auth/token")
    token = served.post("/openadr3/3.1.0/auth/token", data={"grant_type": "client_credentials", "client_id": "bl",
                                                            "client_secret": "bl-secret-change-me"})
    assert token.status_code == 200 and token.json["token_type"] == "Bearer"
    missing = served.get("/openadr3/3.1.0/programs/a/b")
    assert missing.status_code == 404 and missing.json["status"] == 404
    wrong = served.patch("/openadr3/3.1.0/programs")
    assert wrong.status_code == 405 and wrong.json["status"] == 405
    down = served.get("/openadr3/3.1.0/programs", headers={"Authorization": f"Bearer {token.json['access_token']}"})
    assert down.status_code == 503 and down.json["title"] == "Service Unavailable"   # no dr.vtn in this gateway
    assert served.get("/api/health").status_code == 200                                # the seed API is unchanged


def test_demo_site_ships_the_demo_clients_on_loopback():
    raw = json.loads((REPO / "platform-config" / "sites" / "demo" / "web.json").read_text())
    config = parse_config(raw)
    clients = {c.client_id: c for c in config.openadr3.clients}
    assert clients["demo-bl"].role == "bl"
    assert clients["demo-bl"].client_secret.get_secret_value() == "demo-bl-secret-change-me"
    assert clients["demo-ven"].role == "ven" and clients["demo-ven"].ven_name == "ven-demo"
    assert clients["demo-ven"].client_secret.get_secret_value() == "demo-ven-secret-change-me"
    assert config.host == "127.0.0.1"
