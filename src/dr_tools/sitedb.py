"""Which database a script opens: a URL or SQLite path given on the command line, or the one a site's
historian is configured with (platform-config/sites/<site>/historian.json, with the site's VOLTTRON_HOME)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from dr_historian.config import HistorianConfig, parse_config


def repo_root() -> Path:
    """The checkout whose platform-config/ is read: $VDR_REPO, else the one of the running script (scripts/X.py),
    else the folder this module was installed from."""
    script = Path(sys.argv[0]).resolve().parents[1] if sys.argv and sys.argv[0] else None
    for candidate in (os.environ.get("VDR_REPO"), script, Path(__file__).resolve().parents[2]):
        if candidate and (Path(candidate) / "platform-config" / "sites").is_dir():
            return Path(candidate)
    raise FileNotFoundError("cannot find the volttron-dr checkout (its platform-config/): set VDR_REPO")


def site_home(site: str, repo: Path | None = None) -> Path:
    """The VOLTTRON_HOME of a site run by scripts/platform."""
    repo = repo or repo_root()
    out = subprocess.run(["bash", "-c", f'source "{repo}/scripts/lib.sh"; echo "$VDR_STATE"'],
                         env={k: v for k, v in os.environ.items() if k != "VOLTTRON_HOME"} | {"VDR_SITE": site},
                         capture_output=True, text=True, check=True)
    return Path(out.stdout.strip()) / "sites" / site / "vhome"


def site_config(site: str, repo: Path | None = None) -> HistorianConfig:
    """The historian configuration of a site (platform-config/sites/SITE/historian.json)."""
    repo = repo or repo_root()
    path = repo / "platform-config" / "sites" / site / "historian.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the site has no historian configuration")
    raw = json.loads(path.read_text())
    old = os.environ.get("VOLTTRON_HOME")
    os.environ["VOLTTRON_HOME"] = str(site_home(site, repo))
    try:
        return parse_config(raw)
    finally:
        if old is None:
            os.environ.pop("VOLTTRON_HOME", None)
        else:
            os.environ["VOLTTRON_HOME"] = old


def resolve(db: str | None, site: str | None) -> HistorianConfig:
    """--db (a SQLAlchemy URL or a SQLite file path) wins over --site."""
    if db:
        if "://" in db:
            return parse_config({"connection": {"url": db}})
        return parse_config({"connection": {"type": "sqlite", "params": {"database": db}}})
    if site:
        return site_config(site)
    raise ValueError("give --db URL-or-path or --site NAME")


def give_to_folder_owner(url: str) -> None:
    """When root wrote a SQLite file in a folder the platform's service user owns, hand the files back to it."""
    if not url.startswith("sqlite:///") or os.geteuid() != 0:
        return
    path = Path(url.split(":///", 1)[1])
    folder = path.parent.stat()
    for candidate in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        if candidate.exists() and candidate.stat().st_uid != folder.st_uid:
            os.chown(candidate, folder.st_uid, folder.st_gid)
