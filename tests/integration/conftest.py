"""Integration tests run on real platforms from the project's pytest plugin (`dr_testing.plugin`, installed
with volttron-dr-tools): `vplatform` is the session's platform (site `VDR_TEST_SITE`, default `pytest`),
`volttron_instance` a throwaway one per module. `VPlatform` is re-exported for tests that start more."""

from __future__ import annotations

from typing import Any, Callable

import pytest

from dr_ops.busclient import wait_for
from dr_testing.platform import VPlatform  # noqa: F401  (re-exported)


@pytest.fixture
def wait() -> Callable[..., Any]:
    return wait_for
