"""Run the calling operator script with the platform's Python.

Every `scripts/*.py` imports this module first (Python puts the script's own folder on sys.path). The scripts
use the installed volttron-dr packages (dr_common, dr_tools, dr_ops, paho-mqtt), which live in the platform's
virtual environment that scripts/bootstrap sets up: run with another interpreter (`#!/usr/bin/env python3`),
the script is started again with the venv's Python. Standard library only.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

NEEDED = ("dr_common", "dr_tools", "paho.mqtt")


def venv_python() -> Path:
    """The Python of the platform's venv: $VDR_STATE/venv, as scripts/lib.sh places it."""
    default = "/var/lib/volttron-dr" if os.geteuid() == 0 else str(
        Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "volttron-dr")
    return Path(os.environ.get("VDR_STATE") or default) / "venv" / "bin" / "python"


def ensure() -> None:
    """Return when this interpreter has the installed packages; otherwise re-exec with the venv's Python."""
    import importlib.util

    try:
        if all(importlib.util.find_spec(name) is not None for name in NEEDED):
            return
    except ModuleNotFoundError:  # a parent package (paho) is missing
        pass
    python = venv_python()
    if not python.exists() or os.environ.get("VDR_REEXEC"):
        sys.exit(f"error: the volttron-dr packages are not installed for {sys.executable} and there is no "
                 f"platform venv at {python}: run scripts/bootstrap")
    os.environ["VDR_REEXEC"] = "1"
    os.execv(str(python), [str(python), "-B", *sys.argv])


ensure()
