"""The site specification `platform-config/sites/<site>/site.json`, validated into a typed model.

```json
{
  "description": "a home with an EV charger, water heater, HVAC, panel and battery",
  "agents": [
    {"identity": "platform.driver", "package": "volttron-platform-driver", "priority": 10},
    {"identity": "dr.web", "path": "web", "config": "web.json", "tag": "dr", "priority": 60}
  ],
  "driver": {"libs": ["volttron-lib-tree", "drivers"], "configs": "driver"}
}
```
An agent comes from a folder of the repository (`path`, installed editable from a staged copy) or from the
package index (`package`). `config` is a file in the site folder, handed to `vctl install --agent-config`
and stored as the agent's `config` entry in the config store. Driver `libs` are package names or folders of
the repository (`vctl install-lib`); `configs` is a folder of the site holding `config.json`, `registry/*.csv`
and `devices/**/<device>.json` for platform.driver's config store.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

IDENTITY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


class SiteSpecError(ValueError):
    """A site specification that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class AgentSpec:
    identity: str
    path: str | None = None
    package: str | None = None
    config: Path | None = None
    tag: str = "dr"
    priority: int = 50

    @property
    def source_label(self) -> str:
        return self.path or self.package or "?"


@dataclass(frozen=True)
class DriverSpec:
    libs: tuple[str, ...] = ()
    configs: Path | None = None

    def config_entries(self) -> list[tuple[str, Path, bool]]:
        """(config-store name, file, is_csv) for everything platform.driver's store should hold."""
        if self.configs is None or not self.configs.is_dir():
            return []
        entries: list[tuple[str, Path, bool]] = []
        main = self.configs / "config.json"
        if main.is_file():
            entries.append(("config", main, False))
        for csv in sorted((self.configs / "registry").glob("*.csv")):
            entries.append((f"registry/{csv.name}", csv, True))
        devices = self.configs / "devices"
        for dev in sorted(devices.rglob("*.json")):
            entries.append(("devices/" + dev.relative_to(devices).with_suffix("").as_posix(), dev, False))
        return entries


@dataclass(frozen=True)
class SiteSpec:
    name: str
    folder: Path
    description: str = ""
    agents: tuple[AgentSpec, ...] = ()
    driver: DriverSpec = field(default_factory=DriverSpec)

    def agent(self, identity: str) -> AgentSpec:
        for spec in self.agents:
            if spec.identity == identity:
                return spec
        raise KeyError(identity)


def load_site(repo: Path, name: str) -> SiteSpec:
    folder = repo / "platform-config" / "sites" / name
    path = folder / "site.json"
    if not path.is_file():
        raise SiteSpecError(f"{path}: no such site specification")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise SiteSpecError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise SiteSpecError(f"{path}: expected a JSON object")
    agents = []
    seen: set[str] = set()
    for i, item in enumerate(raw.get("agents", [])):
        where = f"{path}: agents[{i}]"
        if not isinstance(item, dict):
            raise SiteSpecError(f"{where}: expected an object")
        identity = item.get("identity")
        if not isinstance(identity, str) or not IDENTITY_RE.match(identity):
            raise SiteSpecError(f"{where}.identity: expected a VIP identity, got {identity!r}")
        if identity in seen:
            raise SiteSpecError(f"{where}.identity: {identity} is listed twice")
        seen.add(identity)
        src_path, package = item.get("path"), item.get("package")
        if (src_path is None) == (package is None):
            raise SiteSpecError(f"{where}: give exactly one of 'path' (a repository folder) or 'package'")
        if src_path is not None and not (repo / src_path / "pyproject.toml").is_file():
            raise SiteSpecError(f"{where}.path: {src_path} has no pyproject.toml")
        config = item.get("config")
        config_path = None
        if config is not None:
            config_path = folder / config
            if not config_path.is_file():
                raise SiteSpecError(f"{where}.config: {config_path} does not exist")
            try:
                json.loads(config_path.read_text())
            except json.JSONDecodeError as exc:
                raise SiteSpecError(f"{where}.config: {config_path} is not valid JSON ({exc})") from None
        priority = item.get("priority", 50)
        if not isinstance(priority, int) or isinstance(priority, bool) or not 0 <= priority < 100:
            raise SiteSpecError(f"{where}.priority: expected an integer 0-99, got {priority!r}")
        tag = item.get("tag", "dr")
        if not isinstance(tag, str) or not tag:
            raise SiteSpecError(f"{where}.tag: expected a non-empty string")
        agents.append(AgentSpec(identity=identity, path=src_path, package=package, config=config_path, tag=tag,
                                priority=priority))
    drv = raw.get("driver") or {}
    if not isinstance(drv, dict):
        raise SiteSpecError(f"{path}: driver: expected an object")
    libs = drv.get("libs", [])
    if not isinstance(libs, list) or not all(isinstance(x, str) and x for x in libs):
        raise SiteSpecError(f"{path}: driver.libs: expected a list of package names or repository folders")
    configs = drv.get("configs")
    driver = DriverSpec(libs=tuple(libs), configs=(folder / configs) if configs else None)
    return SiteSpec(name=name, folder=folder, description=str(raw.get("description", "")), agents=tuple(agents),
                    driver=driver)
