"""The agent's persisted state: one JSON file replaced atomically (write to a temporary file, fsync, rename).

It holds the enrolment (VTN ids of this VEN, its resource and subscription), the event plans (last
modification seen, revision sent, random start offset), the reports being built, the report ids the VTN gave
and the report bodies still owed. A restart reads it back, so no command is repeated and no report is lost.
A file that cannot be read is kept aside (`.bad`) and the agent starts empty, saying so.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

_log = logging.getLogger(__name__)

VERSION = 1
SECTIONS = ("enrolment", "plans", "reports", "reportIds", "pending")


class StateFile:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.data: dict[str, Any] = {"version": VERSION, **{s: {} for s in SECTIONS}}
        self.load_error: str | None = None

    def load(self) -> StateFile:
        if not self.path.exists():
            return self
        try:
            raw = json.loads(self.path.read_text())
            if not isinstance(raw, dict) or raw.get("version") != VERSION:
                raise ValueError(f"not a version {VERSION} state")
            for section in SECTIONS:
                if not isinstance(raw.get(section, {}), dict):
                    raise ValueError(f"section {section} is not an object")
                self.data[section] = raw.get(section, {})
        except (OSError, ValueError) as exc:
            self.load_error = f"{exc.__class__.__name__}: {str(exc)[:200]}"
            _log.error("state file %s cannot be read (%s); kept as %s.bad, starting without it", self.path,
                       self.load_error, self.path.name)
            try:
                os.replace(self.path, self.path.with_name(self.path.name + ".bad"))
            except OSError as move_error:
                _log.error("could not move %s aside: %s", self.path, move_error)
        return self

    def section(self, name: str) -> dict[str, Any]:
        return self.data[name]

    def save(self) -> None:
        """Write atomically; raises OSError when the file cannot be written."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=self.path.name, suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(self.data, handle, separators=(",", ":"), sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
