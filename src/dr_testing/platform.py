"""A real VOLTTRON 11 platform for tests: a throwaway site (its own VOLTTRON_HOME under the state folder)
started with scripts/platform, agents installed with `vctl install` (the same code as scripts/install_site), and
an in-process client agent with credentials of its own for pubsub and RPC (`dr_ops.busclient`).

As root, the platform runs as the service user (VOLTTRON refuses root); as a normal user, as that user. The
checkout it installs from is `VDR_REPO` (or the one this package is installed from).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from dr_ops.busclient import BusClient, Subscription, wait_for
from dr_ops.install_site import install_site as _install_site
from dr_ops.platformctl import SitePlatform, repo_root
from dr_ops.sitespec import load_site

_names = itertools.count(1)


def throwaway_site_name(prefix: str = "vt") -> str:
    """A site name no other test run uses: `<prefix>-<pid>-<n>`."""
    return f"{prefix}-{os.getpid()}-{next(_names)}"


def site_processes(site: str) -> list[str]:
    """Pids of processes of `site` still running (scripts/lib.sh's `site_pids`)."""
    env = {k: v for k, v in os.environ.items() if k != "VOLTTRON_HOME"}
    out = subprocess.run(["bash", "-c", f'source "{repo_root()}/scripts/lib.sh"; site_pids {site}'],
                         env=env, capture_output=True, text=True).stdout
    return out.split()


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

    def publish_and_wait(self, topic: str, message: Any, reply_prefix: str, match: Any = None,
                         timeout: float = 20.0) -> Any:
        """Publish `message` on `topic` and wait for the first message on `reply_prefix` published after it for
        which `match(message)` is true (any, without `match`); returns that message."""
        replies = self.subscribe(reply_prefix)
        self.publish(topic, message)
        return self.wait_for(lambda: next((m for _, _, m in replies if match is None or match(m)), None),
                             timeout=timeout, what=f"a reply on {reply_prefix}")

    def query_historian(self, topic: str, identity: str = "platform.historian", **kwargs: Any) -> Any:
        """platform.historian's `query` (start, end, skip, count, order, agg_type, agg_period as keywords)."""
        return self.rpc(identity, "query", topic=topic, timeout=30, **kwargs)

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    wait_for = staticmethod(wait_for)


def start_platform(site: str) -> VPlatform:
    """A platform for `site`, started fresh (an earlier one of that name is stopped and removed)."""
    plat = VPlatform(site)
    plat.start()
    return plat


def stop_platform(plat: VPlatform, keep: bool = False) -> None:
    """Stop `plat`, and fail if any process of its site is left; its folder is removed unless `keep`."""
    try:
        plat.stop()
    finally:
        left = site_processes(plat.site)
        if not keep and not left:
            shutil.rmtree(plat.plat.site_dir, ignore_errors=True)
        if left:
            raise AssertionError(f"processes of site {plat.site} left after stop: {left}")
