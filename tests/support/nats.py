"""The private nats-server of the tests (dr_tools.fleet.nats), and the check that skips a test without
nats-server (a failure with CI=true)."""

from __future__ import annotations

import pytest

from dr_tools.fleet.nats import NatsServer, nats_server_path
from tests.support.services import IN_CI

__all__ = ["NatsServer", "nats_server_path", "require_nats_server"]


def require_nats_server() -> str:
    """The nats-server binary; skips the test without it (fails with CI=true)."""
    path = nats_server_path()
    if path is not None:
        return path
    reason = "nats-server is not installed (apt-get install nats-server)"
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: a missing service is a failure)")
    pytest.skip(reason)
