"""The agent's gateway: results, a peer that is not connected answered at once (VOLTTRON 11 would time out),
a silent peer after the timeout, a peer that raised, all as the REST layer expects."""

from __future__ import annotations

import gevent
import gevent.event
import pytest
from volttron.client.vip.agent.errors import Unreachable
from volttron.utils.jsonrpc import RemoteError

from dr_web.gateway import PeerFailed, PeerUnavailable
from dr_web import vipgateway
from dr_web.vipgateway import PEER_TTL_S, VipGateway


def _result(value=None, exc=None, never=False):
    result = gevent.event.AsyncResult()
    if exc is not None:
        result.set_exception(exc)
    elif not never:
        result.set(value)
    return result


class FakeVip:
    def __init__(self, peers):
        self.peers = peers
        self.peerlist_calls = 0
        self.answers = {}
        self.rpc = self

    def peerlist(self):
        self.peerlist_calls += 1
        return _result(list(self.peers)) if self.peers is not None else _result(never=True)

    def call(self, identity, method, *args, **kwargs):
        return self.answers[(identity, method)]


class FakeAgent:
    def __init__(self, peers):
        self.vip = FakeVip(peers)


@pytest.fixture
def clock():
    now = [100.0]
    return now


def make(peers, clock):
    agent = FakeAgent(peers)
    return agent, VipGateway(agent, clock=lambda: clock[0])


def test_result_and_peerlist_cached(clock):
    agent, gw = make(["dr.vtn"], clock)
    agent.vip.answers[("dr.vtn", "health")] = _result({"ok": True})
    assert gw.call("dr.vtn", "health", timeout=1) == {"ok": True}
    assert gw.call("dr.vtn", "health", timeout=1) == {"ok": True}
    assert agent.vip.peerlist_calls == 1
    clock[0] += PEER_TTL_S + 0.1
    gw.call("dr.vtn", "health", timeout=1)
    assert agent.vip.peerlist_calls == 2


def test_a_peer_not_connected_is_unavailable_at_once(clock):
    agent, gw = make(["dr.web"], clock)
    with pytest.raises(PeerUnavailable, match="not connected"):
        gw.call("dr.vtn", "list_vens", timeout=30)


def test_silent_peer_times_out_and_the_peerlist_is_asked_again(clock):
    agent, gw = make(["dr.vtn"], clock)
    agent.vip.answers[("dr.vtn", "list_vens")] = _result(never=True)
    with pytest.raises(PeerUnavailable, match="no answer to list_vens within 0.05 s"):
        gw.call("dr.vtn", "list_vens", timeout=0.05)
    agent.vip.peers = []
    with pytest.raises(PeerUnavailable, match="not connected"):
        gw.call("dr.vtn", "list_vens", timeout=0.05)


def test_router_errors_and_remote_exceptions(clock):
    agent, gw = make(["dr.vtn"], clock)
    agent.vip.answers[("dr.vtn", "a")] = _result(exc=Unreachable(113, "unreachable", "dr.vtn", "RPC"))
    agent.vip.answers[("dr.vtn", "b")] = _result(exc=RemoteError("boom", exc_type="KeyError", exc_args=["x"]))
    with pytest.raises(PeerUnavailable, match="unreachable"):
        gw.call("dr.vtn", "a", timeout=1)
    with pytest.raises(PeerFailed, match="KeyError"):
        gw.call("dr.vtn", "b", timeout=1)


def test_without_a_peerlist_the_call_is_still_made(clock, monkeypatch):
    monkeypatch.setattr(vipgateway, "PEERLIST_TIMEOUT_S", 0.05)
    agent, gw = make(None, clock)
    agent.vip.answers[("dr.vtn", "health")] = _result({"ok": True})
    assert gw.call("dr.vtn", "health", timeout=1) == {"ok": True}
