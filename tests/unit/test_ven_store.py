"""The VEN's state file: atomic replace, a corrupt file is moved aside and named."""

from __future__ import annotations

import json

import pytest
from dr_ven_load_control.store import StateError, StateStore


def test_save_and_load_round_trip(tmp_path):
    store = StateStore(tmp_path / "sub" / "ven_state.json")
    assert store.load() is None
    store.save({"event": {"eventId": "e1"}, "actions": {}})
    data = store.load()
    assert data["event"] == {"eventId": "e1"} and data["version"] == 1
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["ven_state.json"]  # no temporary file left


def test_a_corrupt_file_is_moved_aside_and_reported(tmp_path):
    path = tmp_path / "ven_state.json"
    path.write_text("{not json")
    with pytest.raises(StateError, match="unusable"):
        StateStore(path).load()
    assert not path.exists()
    assert len(list(tmp_path.glob("ven_state.json.corrupt-*"))) == 1


def test_an_unknown_version_is_refused(tmp_path):
    path = tmp_path / "ven_state.json"
    path.write_text(json.dumps({"version": 99}))
    with pytest.raises(StateError, match="version"):
        StateStore(path).load()


def test_an_unwritable_directory_raises(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OSError):
        StateStore(blocker / "ven_state.json").save({})
