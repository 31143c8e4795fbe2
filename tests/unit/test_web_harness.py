"""The unit tier's stand-in for the bus (`dr_tools.webharness`, shared with bench/web_livestate.py): the real
dr.vtn service called in-process the way dr.vtn's RPC exports call it, and a small historian that follows
platform.historian's `event_performance` contract. Imported by the other test_web_* files; the tests here
check that the stand-in keeps the contract the agent's gateway keeps."""

from __future__ import annotations

import pytest

from dr_common import topics
from dr_tools.webharness import TOKEN, FakeHistorian, ServiceGateway, WebHarness  # noqa: F401 (re-exported)
from dr_web.gateway import PeerFailed, PeerUnavailable


@pytest.fixture
def web(tmp_path):
    harness = WebHarness(tmp_path)
    yield harness
    harness.close()


def test_gateway_follows_the_rpc_contract(web):
    """Results and `{"error", "field", "code"}` come back as dr.vtn's RPCs return them."""
    ok = web.gateway.call(topics.VTN_IDENTITY, "register_ven", {"venId": "ven-h", "transport": "bus"}, timeout=1)
    assert ok["venId"] == "ven-h" and ok["created"] is True
    missing = web.gateway.call(topics.VTN_IDENTITY, "get_event", "evt-none", timeout=1)
    assert missing == {"error": "eventId: no event 'evt-none'", "field": "eventId", "code": "not_found"}
    wrong_args = web.gateway.call(topics.VTN_IDENTITY, "get_event", timeout=1)
    assert wrong_args["code"] == "invalid"


def test_gateway_reports_silent_and_failing_peers(web):
    web.gateway.down.add(topics.VTN_IDENTITY)
    with pytest.raises(PeerUnavailable, match="dr.vtn"):
        web.gateway.call(topics.VTN_IDENTITY, "list_vens", timeout=1)
    with pytest.raises(PeerFailed, match="no_such_method"):
        web.gateway.call(topics.HISTORIAN_IDENTITY, "no_such_method", timeout=1)
