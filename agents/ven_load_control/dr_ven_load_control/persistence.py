"""Persistence room of the VEN core: the state written before any point is, and read back on start.

`Journal.save` writes what the engine hands it (event, actions, overrides, the site view's picture) through
the `StateStore`; a write error is counted and reported, never raised. `Journal.load` returns the stored
pieces parsed, or None (no file, corrupt file moved aside, malformed content), each reported.
"""

from __future__ import annotations

from collections.abc import Callable
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from dr_ven_load_control.loads import Action
from dr_ven_load_control.state import EventState
from dr_ven_load_control.store import StateError, StateStore


@dataclass
class Stored:
    """What a previous process left: its event, its shed actions, the site owner's overrides, and the raw
    state (for the site view's own picture)."""

    event: EventState | None
    actions: dict[str, Action]
    overrides: set[str]
    raw: dict[str, Any] = field(default_factory=dict)


class Journal:
    """Saves and loads the VEN's durable state; problems go to `problem` and `counters`."""

    def __init__(self, store: StateStore | None, counters: Counter[str], problem: Callable[[str], None]) -> None:
        self.store = store
        self.counters = counters
        self.problem = problem

    def save(self, state: dict[str, Any]) -> None:
        """Replace the stored state; an OSError is counted and reported."""
        if self.store is None:
            return
        try:
            self.store.save(state)
        except OSError as exc:
            self.counters["state_save_failures"] += 1
            self.problem(f"cannot save state to {self.store.path}: {exc}")

    def load(self) -> Stored | None:
        """The stored state parsed, or None when there is none or it cannot be used (reported)."""
        if self.store is None:
            return None
        try:
            state = self.store.load()
        except StateError as exc:
            self.problem(str(exc))
            return None
        if not state:
            return None
        try:
            actions = {lid: Action.from_dict(data) for lid, data in (state.get("actions") or {}).items()}
            event = EventState.from_dict(state["event"]) if state.get("event") else None
            overrides = set(state.get("overrides") or [])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            self.problem(f"stored state unusable ({exc!r}); nothing resumed")
            return None
        return Stored(event=event, actions=actions, overrides=overrides, raw=state)
