"""Processes of a site's platform as the benches measure them: an agent's pid by its VOLTTRON_HOME and VIP
identity, and the CPU seconds a process has used."""

from __future__ import annotations

import os
from pathlib import Path


def agent_pid(home: Path, identity: str) -> int:
    """The pid of the agent `identity` of the platform at `home` (read from /proc: its environment)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            env = dict(item.split("=", 1) for item in (proc / "environ").read_bytes().decode(errors="replace")
                       .split("\0") if "=" in item)
        except OSError:
            continue
        if env.get("VOLTTRON_HOME") == str(home) and env.get("AGENT_VIP_IDENTITY") == identity:
            return int(proc.name)
    raise RuntimeError(f"no {identity} process for {home}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used by `pid` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
