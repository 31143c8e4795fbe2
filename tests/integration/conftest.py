"""The real-platform fixture: one VOLTTRON 11 platform for the whole test session.

`vplatform` starts a throwaway site (`pytest`, its own VOLTTRON_HOME under the state folder) with
scripts/platform, installs agents from the repository with `vctl install` (through the same code as
scripts/install_site), and gives tests an in-process client agent for pubsub and RPC. At the end it shuts
the platform down, checks that no process of the site is left, and removes the site.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from dr_ops.busclient import BusClient, Subscription, wait_for
from dr_ops.install_site import install_site as _install_site
from dr_ops.platformctl import SitePlatform, repo_root
from dr_ops.sitespec import load_site

TEST_SITE = os.environ.get("VDR_TEST_SITE", "pytest")


class VPlatform:
    """What integration tests use; see the module docstring."""

    def __init__(self, site: str) -> None:
        self.plat = SitePlatform(site)
        self.repo = self.plat.repo
        self.site = site
        self.home: Path = self.plat.home
        self.log_path: Path = self.plat.log_path
        self.state_dir: Path = self.plat.site_dir / "data"
        self.start_seconds = 0.0
        self._client: BusClient | None = None

    # lifecycle
    def start(self) -> None:
        if self.plat.site_dir.exists():
            self.plat.stop()
            shutil.rmtree(self.plat.site_dir)
        t0 = time.monotonic()
        self.plat.start()
        self.start_seconds = time.monotonic() - t0
        self.plat.write_file(self.state_dir / ".keep", b"")

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        self.plat.stop()

    # platform operations
    def vctl(self, *args: str, timeout: float = 180, check: bool = True) -> str:
        return self.plat.vctl(*args, timeout=timeout, check=check)

    def install_agent(self, agent_dir: str, identity: str, config: dict[str, Any] | None = None,
                      tag: str | None = None, priority: int = 50) -> str:
        """Install an agent of the repository: `agent_dir` is a folder under agents/ or a repository path."""
        rel = agent_dir if (self.repo / agent_dir / "pyproject.toml").is_file() else f"agents/{agent_dir}"
        return self.plat.install_agent(identity, path=rel, config=config, tag=tag or "dr", priority=priority)

    def install_package_agent(self, package: str, identity: str, config: dict[str, Any] | None = None,
                              priority: int = 50) -> str:
        return self.plat.install_agent(identity, package=package, config=config, priority=priority)

    def install_lib(self, lib: str) -> str:
        return self.plat.install_lib(lib)

    def install_site(self, site_name: str, only: list[str] | None = None,
                     overrides: dict[str, dict[str, Any]] | None = None) -> dict[str, str]:
        """Install the agents (or `only` some) of platform-config/sites/<site_name> onto this platform,
        with `overrides` laid over agent configs (identity -> settings)."""
        return _install_site(load_site(self.repo, site_name), self.plat, set(only) if only else None, overrides)

    def store_config(self, identity: str, name: str, data: Any, csv: bool = False) -> None:
        self.plat.store_config(identity, name, data, csv=csv)

    def agents(self):
        return self.plat.agents()

    def restart_agent(self, identity: str) -> None:
        self.vctl("restart", self.plat.agents()[identity].uuid, timeout=120)

    def write_file(self, relpath: str, data: bytes | str | dict) -> Path:
        """A file under state_dir that the service user owns (agent data, configs)."""
        if isinstance(data, dict):
            data = json.dumps(data)
        if isinstance(data, str):
            data = data.encode()
        return self.plat.write_file(self.state_dir / relpath, data)

    # bus
    @property
    def client(self):
        return self.bus.agent

    @property
    def bus(self) -> BusClient:
        if self._client is None:
            self._client = BusClient(self.plat, "pytest.client").connect()
        return self._client

    def rpc(self, identity: str, method: str, *args: Any, timeout: float = 10, **kwargs: Any) -> Any:
        return self.bus.rpc(identity, method, *args, timeout=timeout, **kwargs)

    def publish(self, topic: str, message: Any, headers: dict[str, Any] | None = None) -> None:
        self.bus.publish(topic, message, headers)

    def subscribe(self, prefix: str) -> Subscription:
        return self.bus.subscribe(prefix)

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    wait_for = staticmethod(wait_for)


@pytest.fixture(scope="session")
def vplatform():
    plat = VPlatform(TEST_SITE)
    plat.start()
    print(f"\nplatform for site {TEST_SITE} ready in {plat.start_seconds:.1f} s at {plat.home}")
    try:
        yield plat
    finally:
        try:
            plat.stop()
        finally:
            left = subprocess.run(["bash", "-c", f'source "{repo_root()}/scripts/lib.sh"; site_pids {TEST_SITE}'],
                                  env={k: v for k, v in os.environ.items() if k != "VOLTTRON_HOME"},
                                  capture_output=True, text=True).stdout.split()
            if not os.environ.get("VDR_KEEP_TEST_SITE") and not left:
                shutil.rmtree(plat.plat.site_dir, ignore_errors=True)
            assert not left, f"processes of site {TEST_SITE} left after stop: {left}"


@pytest.fixture
def wait() -> Callable[..., Any]:
    return wait_for
