"""The OpenADR 3 callback URL policy of dr.vtn (oadr_callbacks.CallbackPolicy, `openadr3.callbackPolicy`):
refused at subscription create/update with a 400 naming `objectOperations[i].callbackUrl`, and again at delivery
after the name is resolved (a refused address is never called, and counted). Deliveries go to a real local
receiver; only name resolution is replaced, so that a name can resolve to a chosen address."""

from __future__ import annotations

import dataclasses
import ipaddress
import random
import socket
import time

import pytest

from dr_vtn_dispatcher.config import ConfigError, parse_config
from dr_vtn_dispatcher.dispatch import MemorySender
from dr_vtn_dispatcher.errors import ApiError
from dr_vtn_dispatcher.lifecycle import ManualScheduler
from dr_vtn_dispatcher.oadr_callbacks import CallbackPolicy, CallbackRefused
from dr_vtn_dispatcher.oadr_notify import WebhookNotifier
from dr_vtn_dispatcher.service import VtnService
from dr_vtn_dispatcher.store import Store, sqlite_url
from tests.unit.test_oadr3_notify import BL, Receiver, event, subscribe, wait_until

DEFAULT = CallbackPolicy.from_config(parse_config({}).openadr3.callback_policy)


def policy(**raw) -> CallbackPolicy:
    return CallbackPolicy.from_config(parse_config({"openadr3": {"callbackPolicy": raw}}).openadr3.callback_policy)


def refused(p: CallbackPolicy, url: str) -> str | None:
    try:
        p.check_url(url)
    except CallbackRefused as exc:
        return str(exc)
    return None


@pytest.mark.parametrize("url", [
    "http://169.254.169.254/latest/meta-data/", "http://[fe80::1]/x", "http://127.0.0.1:9000/cb",
    "http://localhost:9000/cb", "http://[::1]/cb", "http://[::ffff:127.0.0.1]/cb", "http://10.1.2.3/cb",
    "http://192.168.1.10/cb", "http://172.16.0.1/cb", "http://100.64.0.1/cb", "http://0.0.0.0:9000/cb",
    "http://224.0.0.1/cb", "file:///etc/passwd", "gopher://93.184.216.34/", "ftp://93.184.216.34/x",
    "http:///nohost", "https://user:pw@93.184.216.34/cb", "http://93.184.216.34:99999/cb",
    "http://2130706433/cb", "http://0x7f.1/cb", "http://127.1:9000/cb", "http://0251.0376.0251.0376/"])
def test_default_policy_refuses_internal_and_odd_urls(url):
    assert refused(DEFAULT, url)


@pytest.mark.parametrize("url", ["https://93.184.216.34/cb", "http://93.184.216.34:8080/cb",
                                 "https://ven-1.example/callback", "https://[2606:2800:220:1::1]/cb"])
def test_default_policy_accepts_public_addresses_and_names(url):
    assert refused(DEFAULT, url) is None


def test_allowed_hosts_and_networks_open_private_addresses_but_never_link_local_or_the_vtn_port():
    p = policy(allowedHosts=["127.0.0.1", "Hub.Lan"], allowedNetworks=["10.0.0.0/8", "169.254.0.0/16"])
    assert refused(p, "http://127.0.0.1:9000/cb") is None
    assert refused(p, "http://10.9.8.7/cb") is None
    assert refused(p, "http://192.168.1.1/cb")                  # not allowed
    assert "link-local" in refused(p, "http://169.254.169.254/")   # allowed in config, refused anyway
    assert "VTN's own HTTP port" in refused(p, "http://127.0.0.1:8080/openadr3/3.1.0/events")
    assert refused(policy(allowedHosts=["127.0.0.1"], vtnHttpPort=8443), "http://127.0.0.1:8080/x") is None
    assert refused(policy(allowedHosts=["127.0.0.1"], vtnHttpPort=8443), "http://127.0.0.1:8443/x")


def test_the_vtn_port_on_an_address_of_this_machine_is_refused():
    own = dataclasses.replace(policy(allowedNetworks=["10.0.0.0/8"]),
                              own_addresses=lambda: frozenset({ipaddress.ip_address("10.0.0.5")}))
    assert "VTN's own HTTP port" in refused(own, "http://10.0.0.5:8080/openadr3/3.1.0/events")
    assert refused(own, "http://10.0.0.6:8080/cb") is None and refused(own, "http://10.0.0.5:9000/cb") is None
    assert ipaddress.ip_address("127.0.0.1") in DEFAULT.own_addresses()     # the real lookup: interfaces too


def test_allow_public_false_is_an_allow_list_and_schemes_narrow():
    p = policy(allowPublic=False, allowedHosts=["ven.example"], allowedNetworks=["203.0.113.0/24"])
    assert refused(p, "https://ven.example/cb") is None
    assert refused(p, "https://203.0.113.9/cb") is None
    assert "allowed hosts" in refused(p, "https://other.example/cb")
    assert refused(p, "https://93.184.216.34/cb")
    assert "scheme 'http'" in refused(policy(schemes=["https"]), "http://93.184.216.34/cb")


def test_bad_policy_config_names_the_key():
    for raw, key in (({"allowedNetworks": ["10.0.0.0/33"]}, "allowedNetworks"), ({"schemes": ["ftp"]}, "schemes"),
                     ({"vtnHttpPort": 0}, "vtnHttpPort"), ({"allowedHostz": []}, "allowedHostz")):
        with pytest.raises(ConfigError) as caught:
            parse_config({"openadr3": {"callbackPolicy": raw}})
        assert key in caught.value.key


def _resolving(p: CallbackPolicy, names: dict[str, str]) -> CallbackPolicy:
    def getaddrinfo(host, port, *args, **kwargs):
        if host not in names:
            raise socket.gaierror(socket.EAI_NONAME, "unknown name")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (names[host], port))]
    return dataclasses.replace(p, getaddrinfo=getaddrinfo)


def test_resolve_checks_every_address_a_name_has():
    p = _resolving(DEFAULT, {"ven.example": "93.184.216.34", "rebind.example": "127.0.0.1",
                             "meta.example": "169.254.169.254"})
    assert p.resolve("ven.example", 443) == [ipaddress.ip_address("93.184.216.34")]
    with pytest.raises(CallbackRefused):
        p.resolve("rebind.example", 80)
    with pytest.raises(CallbackRefused):
        p.resolve("meta.example", 80)
    with pytest.raises(OSError):
        p.resolve("nowhere.example", 80)
    with pytest.raises(CallbackRefused):               # the system's resolver reads numeric forms itself
        DEFAULT.resolve("2130706433", 80)


def _vtn(tmp_path, notifier: WebhookNotifier | None, raw: dict) -> VtnService:
    clock = ManualScheduler(time.time())
    store = Store(sqlite_url(str(tmp_path / "vtn.sqlite")))
    vtn = VtnService(store, clock, MemorySender(clock.now), parse_config(raw), rng=random.Random(3), notifier=notifier)
    vtn.start()
    return vtn


def test_subscription_create_and_update_refuse_a_callback_naming_its_field(tmp_path):
    vtn = _vtn(tmp_path, None, {})
    try:
        good = {"objects": ["EVENT"], "operations": ["CREATE"], "callbackUrl": "https://ven.example/cb"}
        bad = {**good, "callbackUrl": "http://169.254.169.254/latest/meta-data/"}
        with pytest.raises(ApiError) as caught:
            vtn.oadr_create("subscriptions", {"clientName": "c", "objectOperations": [good, bad]}, BL)
        assert caught.value.code == "invalid" and caught.value.field == "objectOperations[1].callbackUrl"
        assert vtn.oadr_search("subscriptions", BL) == []                      # nothing written
        made = vtn.oadr_create("subscriptions", {"clientName": "c", "objectOperations": [good]}, BL)
        with pytest.raises(ApiError) as caught:
            vtn.oadr_update("subscriptions", made["id"], {"clientName": "c", "objectOperations": [
                {**good, "callbackUrl": "http://127.0.0.1:9000/x"}]}, BL)
        assert caught.value.field == "objectOperations[0].callbackUrl"
        assert vtn.oadr_get("subscriptions", made["id"], BL)["objectOperations"][0]["callbackUrl"] == \
            "https://ven.example/cb"
    finally:
        vtn.stop()
        vtn.store.close()


def test_a_name_resolving_to_a_refused_address_is_not_called_and_is_counted(tmp_path):
    receiver = Receiver()
    notifier = WebhookNotifier(backoff_s=0.01, workers=1)
    vtn = _vtn(tmp_path, notifier, {})
    port = receiver.http.server_port
    try:
        # the name passes at subscription time (it is not resolved then); it resolves to loopback when sent
        notifier.set_policy(_resolving(vtn.callback_policy, {"ven.example": "127.0.0.1"}))
        subscribe(vtn, BL, f"http://ven.example:{port}/cb", "t")
        vtn.oadr_create("events", event(), BL)
        wait_until(lambda: notifier.counters()["webhooksRefused"] == 1 and notifier.idle())
        counts = notifier.counters()
        assert counts["webhooksGivenUp"] == 1 and counts["webhooksDelivered"] == 0 and receiver.hits == 0
        assert counts["webhookAttemptsFailed"] == 1                        # no retry of a refused address
        # allowed explicitly, the same name is called (on its checked address)
        notifier.set_policy(_resolving(policy(allowedNetworks=["127.0.0.0/8"]), {"ven.example": "127.0.0.1"}))
        vtn.oadr_create("events", event(), BL)
        wait_until(lambda: notifier.counters()["webhooksDelivered"] == 1)
        assert receiver.received[0][0] == "/cb" and receiver.received[0][1] == "Bearer t"
    finally:
        vtn.stop()
        vtn.store.close()
        receiver.close()
