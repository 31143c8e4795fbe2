"""`auth/token` limits (dr_web.oadr3.auth.TokenLimiter, `openadr3.tokenLimits`): a client locked out after
repeated wrong secrets (refused even with the right one until the lockout ends), an address locked out after
repeated failures and throttled past its request budget, bounded state, constant-time secret comparison, and
the 429 answer over HTTP in the spec's problem shape with RFC 6749's error."""

from __future__ import annotations

import hmac

import pytest

from dr_common import topics
from dr_tools.webharness import ServiceGateway
from dr_web.app import create_app
from dr_web.config import parse_config as parse_web_config
from dr_web.livestate import LiveState
from dr_web.oadr3 import auth
from dr_web.oadr3.auth import AuthFailure, Oadr3Config, TokenIssuer

SECRET = "bl-secret-long-enough"
RIGHT = {"grant_type": "client_credentials", "client_id": "bl", "client_secret": SECRET}
WRONG = {**RIGHT, "client_secret": "not-the-secret"}


def issuer(now: list[float], **limits) -> TokenIssuer:
    config = Oadr3Config.model_validate({"clients": [{"clientId": "bl", "clientSecret": SECRET, "role": "bl"},
                                                     {"clientId": "other", "clientSecret": SECRET, "role": "bl"}],
                                         "tokenLimits": limits})
    return TokenIssuer(config, clock=lambda: now[0])


def status_of(tokens: TokenIssuer, form: dict, remote: str) -> int:
    try:
        tokens.issue(form, remote=remote)
    except AuthFailure as exc:
        return exc.status
    return 200


def test_a_client_is_locked_out_after_wrong_secrets_even_for_the_right_one_until_the_lockout_ends():
    now = [1000.0]
    tokens = issuer(now, maxClientFailures=3, lockoutS=60)
    assert [status_of(tokens, WRONG, f"203.0.113.{i}") for i in range(3)] == [401, 401, 401]   # from 3 addresses
    with pytest.raises(AuthFailure) as caught:
        tokens.issue(RIGHT, remote="198.51.100.1")
    assert caught.value.status == 429 and caught.value.error == "temporarily_unavailable"
    assert caught.value.retry_after_s == 60 and SECRET not in caught.value.description
    assert status_of(tokens, {**RIGHT, "client_id": "other"}, "198.51.100.1") == 200   # other clients unaffected
    now[0] += 61
    assert status_of(tokens, RIGHT, "198.51.100.1") == 200
    assert tokens.counters()["tokenLockouts"] == 1 and tokens.counters()["tokenRequestsThrottled"] == 1


def test_failures_outside_the_window_do_not_add_up_and_a_success_forgets_them():
    now = [0.0]
    tokens = issuer(now, maxClientFailures=3, failureWindowS=10)
    for _ in range(2):
        assert status_of(tokens, WRONG, "203.0.113.1") == 401
    now[0] += 11
    assert status_of(tokens, WRONG, "203.0.113.1") == 401                 # the first two are out of the window
    assert status_of(tokens, RIGHT, "203.0.113.1") == 200
    for _ in range(2):
        assert status_of(tokens, WRONG, "203.0.113.1") == 401             # counting starts again after a success
    assert status_of(tokens, RIGHT, "203.0.113.1") == 200


def test_an_address_is_locked_out_after_failures_with_unknown_clients_which_keep_no_client_state():
    now = [0.0]
    tokens = issuer(now, maxAddressFailures=5, lockoutS=30)
    for index in range(5):
        assert status_of(tokens, {**RIGHT, "client_id": f"guess-{index}"}, "203.0.113.9") == 401
    assert status_of(tokens, RIGHT, "203.0.113.9") == 429                  # even a valid client from there
    assert status_of(tokens, RIGHT, "203.0.113.10") == 200                 # another address is not
    assert tokens.limiter._clients == {}                                    # unknown ids are not tracked
    for bad in ({"grant_type": "password"}, {**RIGHT, "grant_type": "implicit"}):
        assert status_of(tokens, bad, "203.0.113.11") == 400               # malformed requests count too
    now[0] += 31
    assert status_of(tokens, RIGHT, "203.0.113.9") == 200


def test_an_address_past_its_request_budget_is_throttled_then_refilled():
    now = [0.0]
    tokens = issuer(now, requestsPerS=2, burst=4)
    assert [status_of(tokens, RIGHT, "203.0.113.5") for _ in range(5)] == [200, 200, 200, 200, 429]
    assert status_of(tokens, RIGHT, "203.0.113.6") == 200
    now[0] += 0.5                                                          # one request's worth at 2/s
    assert [status_of(tokens, RIGHT, "203.0.113.5") for _ in range(2)] == [200, 429]


def test_tracked_addresses_are_bounded():
    now = [0.0]
    tokens = issuer(now, maxTrackedAddresses=3)
    for index in range(50):
        status_of(tokens, WRONG, f"203.0.113.{index}")
    assert len(tokens.limiter._addresses) == 3


def test_secrets_are_compared_in_constant_time_whatever_their_length(monkeypatch):
    compared = []
    real = hmac.compare_digest

    def spy(a, b):
        compared.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    now = [0.0]
    tokens = issuer(now, maxClientFailures=100)
    for secret in ("x" * 8, "y" * 300, SECRET):
        status_of(tokens, {**RIGHT, "client_secret": secret}, "203.0.113.1")
    status_of(tokens, {**RIGHT, "client_id": "nobody"}, "203.0.113.1")   # an unknown client is compared too
    assert compared == [(32, 32)] * 4


def test_429_over_http_is_a_problem_with_the_oauth_error():
    config = parse_web_config({"openadr3": {"clients": [{"clientId": "bl", "clientSecret": SECRET, "role": "bl"}],
                                            "tokenLimits": {"maxClientFailures": 2, "maxAddressFailures": 3}}})
    client = create_app(config, LiveState(), ServiceGateway({}),
                        lambda: {"identity": topics.WEB_IDENTITY}).test_client()

    def post(form: dict, remote: str):
        return client.post("/openadr3/3.1.0/auth/token", data=form, environ_base={"REMOTE_ADDR": remote})

    assert [post(WRONG, "198.51.100.7").status_code for _ in range(2)] == [401, 401]
    locked = post(RIGHT, "198.51.100.8")
    assert locked.status_code == 429
    assert locked.json["status"] == 429 and locked.json["error"] == "temporarily_unavailable"
    assert {"type", "title", "detail"} <= set(locked.json) and SECRET not in locked.get_data(as_text=True)
    assert locked.json["title"] == "Too Many Requests" and int(locked.headers["Retry-After"]) >= 1
    guesses = [post({**RIGHT, "client_id": f"guess-{i}"}, "198.51.100.9").status_code for i in range(3)]
    assert guesses == [401, 401, 401]                       # the address is the request's peer address
    assert post({**RIGHT, "client_id": "guess-9"}, "198.51.100.9").status_code == 429
    assert post({**RIGHT, "client_id": "guess-9"}, "198.51.100.10").status_code == 401
