"""Checks for the machine's services. On a laptop a missing service skips the test with its reason;
with CI=true it fails the test, because CI machines always have them."""

from __future__ import annotations

import os
import socket

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

POSTGRES_HOST, POSTGRES_PORT = "127.0.0.1", 5432
MOSQUITTO_HOST, MOSQUITTO_PORT = "127.0.0.1", 1883


def _reachable(host: str, port: int, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def require(service: str, host: str, port: int) -> None:
    if _reachable(host, port):
        return
    reason = f"{service} is not reachable at {host}:{port}"
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: a missing service is a failure)")
    pytest.skip(reason)


def require_postgres() -> None:
    require("PostgreSQL", POSTGRES_HOST, POSTGRES_PORT)


def require_mosquitto() -> None:
    require("Mosquitto", MOSQUITTO_HOST, MOSQUITTO_PORT)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
