"""Install a site onto its platform: `scripts/install_site NAME`.

Reads platform-config/sites/NAME/site.json, starts the site's platform if needed, installs the driver
libraries with `vctl install-lib`, stores every driver config and registry in platform.driver's config
store, and installs every agent with `vctl install --vip-identity --agent-config --tag --start --enable`.
Re-running it updates configs and restarts changed agents without installing anything twice.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Any

from dr_common.topics import DRIVER_IDENTITY
from dr_ops.platformctl import PlatformError, SitePlatform, repo_root
from dr_ops.sitespec import SiteSpec, SiteSpecError, load_site

_log = logging.getLogger("install_site")


def merge(base: Any, override: Any) -> Any:
    """`override` laid over `base`: mappings merge key by key, anything else replaces."""
    if isinstance(base, dict) and isinstance(override, dict):
        return {**base, **{k: merge(base.get(k), v) for k, v in override.items()}}
    return override


def install_site(spec: SiteSpec, plat: SitePlatform, only: set[str] | None = None,
                 overrides: dict[str, dict[str, Any]] | None = None) -> dict[str, str]:
    """Install what `spec` lists; returns {what: action} in the order done. `overrides` maps an identity to
    settings laid over its site config (another broker client id or web port for a second copy of a site)."""
    done: dict[str, str] = {}
    t0 = time.monotonic()

    def note(what: str, action: str) -> None:
        done[what] = action
        _log.info("[%5.1fs] %-28s %s", time.monotonic() - t0, what, action)

    if not plat.is_running():
        plat.start()
        note("platform", "started")
    wanted = [a for a in spec.agents if only is None or a.identity in only]
    driver_wanted = any(a.identity == DRIVER_IDENTITY for a in wanted)
    if driver_wanted:
        for lib in spec.driver.libs:
            note(f"lib {lib}", plat.install_lib(lib))
        stored = 0
        for name, path, is_csv in spec.driver.config_entries():
            plat.store_config(DRIVER_IDENTITY, name, path, csv=is_csv)
            stored += 1
        note("platform.driver configs", f"{stored} stored")
    for agent in wanted:
        config = json.loads(agent.config.read_text()) if agent.config else None
        if overrides and agent.identity in overrides:
            config = merge(config or {}, overrides[agent.identity])
        action = plat.install_agent(agent.identity, path=agent.path, package=agent.package, config=config,
                                    tag=agent.tag, priority=agent.priority)
        note(agent.identity, f"{action} ({agent.source_label})")
    if driver_wanted and done.get(DRIVER_IDENTITY, "").startswith("unchanged") and spec.driver.config_entries():
        info = plat.agents()[DRIVER_IDENTITY]
        plat.vctl("restart", info.uuid)
        note(DRIVER_IDENTITY, "restarted to apply its configs")
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="install_site", description=__doc__.split("\n\n")[0])
    parser.add_argument("site", help="a folder of platform-config/sites/")
    parser.add_argument("--only", action="append", metavar="IDENTITY", help="install only these agents")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    _log.setLevel(logging.INFO)
    repo = repo_root()
    try:
        spec = load_site(repo, args.site)
    except SiteSpecError as exc:
        _log.error("error: %s", exc)
        return 2
    plat = SitePlatform(args.site, repo)
    try:
        install_site(spec, plat, set(args.only) if args.only else None)
    except PlatformError as exc:
        _log.error("error: %s", exc)
        return 1
    _log.info("%s", plat.vctl("status", check=False).rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
