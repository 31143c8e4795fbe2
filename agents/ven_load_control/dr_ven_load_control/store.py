"""The VEN's durable state (active command, baseline, every shed point's pre-event value) in one JSON file.

Written atomically (temporary file + rename) so that a crash leaves either the old or the new state. A file that
cannot be read is moved aside and reported, never silently ignored.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

_log = logging.getLogger(__name__)

STATE_VERSION = 1


class StateError(RuntimeError):
    """The state file exists but cannot be used."""


class StateStore:
    """The VEN's state file: atomic JSON replace, corrupt files moved aside."""

    def __init__(self, path: str | os.PathLike[str], fsync: bool = False) -> None:
        self.path = Path(path)
        self.fsync = fsync

    def save(self, state: dict[str, Any]) -> None:
        """Replace the stored state; raises OSError when the directory is not writable."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = json.dumps({"version": STATE_VERSION, "savedAt": time.time(), **state}, separators=(",", ":"),
                          sort_keys=True, default=str)
        fd, tmp = tempfile.mkstemp(prefix=".ven_state.", dir=str(self.path.parent))
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(data)
                if self.fsync:
                    handle.flush()
                    os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise

    def load(self) -> dict[str, Any] | None:
        """The stored state, None when there is no file; a corrupt file is renamed to `<name>.corrupt-<ts>` and
        StateError names it."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError(f"expected an object, got {type(data).__name__}")
            if data.get("version") != STATE_VERSION:
                raise ValueError(f"unsupported state version {data.get('version')!r}")
        except ValueError as exc:
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            os.replace(self.path, aside)
            raise StateError(f"state file {self.path} unusable ({exc}); moved to {aside}") from None
        return data

    def clear(self) -> None:
        """Remove the state file (no error when there is none)."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
