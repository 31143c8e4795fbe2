"""pytest plugin of volttron-dr (entry point `pytest11: volttron_dr`), installed with the volttron-dr-tools
distribution: fixtures that start a real VOLTTRON 11 platform and drive it.

- `volttron_instance` (module scope): a real platform in a throwaway VOLTTRON_HOME, started before the module's
  first test and stopped after its last, with no process of it left (the fixture fails otherwise).
- `vplatform` (session scope): one platform for the whole run, site `VDR_TEST_SITE` (default `pytest`).
- `build_agent`: an in-process client agent with credentials of its own on `volttron_instance`
  (`build_agent("my.tester")` -> `dr_ops.busclient.BusClient`: `publish`, `subscribe`, `rpc`).
- `dr_site`: installs a site of platform-config/sites (or a folder of your own) onto `volttron_instance`.

The platform object (`dr_testing.platform.VPlatform`) installs agents (`install_agent`, `install_site`),
stores configs, publishes and waits (`publish_and_wait`, `wait_for`), calls RPCs and reads the historian
(`query_historian`). Nothing is imported from VOLTTRON until a fixture is used, so the plugin costs nothing to
test runs that do not use it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

TEST_SITE_ENV = "VDR_TEST_SITE"


def _keep() -> bool:
    return bool(os.environ.get("VDR_KEEP_TEST_SITE"))


@pytest.fixture(scope="session")
def vplatform() -> Iterator[Any]:
    """One platform for the session: site `VDR_TEST_SITE` (default `pytest`)."""
    from dr_testing.platform import start_platform, stop_platform

    plat = start_platform(os.environ.get(TEST_SITE_ENV, "pytest"))
    print(f"\nplatform for site {plat.site} ready in {plat.start_seconds:.1f} s at {plat.home}")
    try:
        yield plat
    finally:
        stop_platform(plat, keep=_keep())


@pytest.fixture(scope="module")
def volttron_instance() -> Iterator[Any]:
    """A real platform in a throwaway VOLTTRON_HOME for this module."""
    from dr_testing.platform import start_platform, stop_platform, throwaway_site_name

    plat = start_platform(throwaway_site_name())
    try:
        yield plat
    finally:
        stop_platform(plat, keep=_keep())


@pytest.fixture
def build_agent(volttron_instance: Any) -> Iterator[Callable[..., Any]]:
    """Client agents on `volttron_instance`, each with credentials of its own; closed after the test."""
    from dr_ops.busclient import BusClient

    made: list[Any] = []

    def build(identity: str = "pytest.agent") -> Any:
        client = BusClient(volttron_instance.plat, identity).connect()
        made.append(client)
        return client

    yield build
    for client in made:
        client.close()


@pytest.fixture
def dr_site(volttron_instance: Any) -> Callable[..., dict[str, str]]:
    """`dr_site("home", only=[...], overrides={identity: {...}})` installs a site's agents on
    `volttron_instance` and returns {identity: uuid}."""

    def install(site: str, only: list[str] | None = None,
                overrides: dict[str, dict[str, Any]] | None = None) -> dict[str, str]:
        return volttron_instance.install_site(site, only=only, overrides=overrides)

    return install
