"""Checks for the machine's services. On a laptop a missing service skips the test with its reason;
with CI=true it fails the test, because CI machines always have them."""

from __future__ import annotations

import contextlib
import os
import socket
import uuid

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


def postgres_url(dbname: str) -> str:
    return f"postgresql+psycopg2://postgres@{POSTGRES_HOST}:{POSTGRES_PORT}/{dbname}"


def postgres_admin():
    """An autocommit psycopg2 connection to the server's `postgres` database (trust auth here)."""
    import psycopg2

    conn = psycopg2.connect(host=POSTGRES_HOST, port=POSTGRES_PORT, user="postgres", dbname="postgres",
                            connect_timeout=5)
    conn.autocommit = True
    return conn


@contextlib.contextmanager
def throwaway_postgres_db(prefix: str):
    """Create a uniquely named database on the local PostgreSQL, yield its name, drop it afterwards."""
    require_postgres()
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = postgres_admin()
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
