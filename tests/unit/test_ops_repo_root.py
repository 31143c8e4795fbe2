"""dr_ops is installed from a staged copy, so it finds the checkout from $VDR_REPO, else from the running program
(a benchmark run as `venv/bin/python bench/x.py` sets no VDR_REPO) or the current folder."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from dr_ops import platformctl
from dr_ops.platformctl import PlatformError, repo_root

REPO = Path(__file__).resolve().parents[2]


def test_vdr_repo_wins(monkeypatch, tmp_path):
    monkeypatch.setenv("VDR_REPO", str(tmp_path))
    assert repo_root() == tmp_path


def test_a_benchmark_finds_its_checkout_without_vdr_repo(monkeypatch, tmp_path):
    monkeypatch.delenv("VDR_REPO", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [str(REPO / "bench" / "dispatch_fanout.py")])
    assert repo_root() == REPO


def test_the_current_folder_counts_and_nothing_else_is_guessed(monkeypatch, tmp_path):
    monkeypatch.delenv("VDR_REPO", raising=False)
    monkeypatch.setattr(sys, "argv", ["-c"])
    monkeypatch.setattr(platformctl, "__file__", str(tmp_path / "staged" / "dr_ops" / "platformctl.py"))
    monkeypatch.chdir(REPO / "agents")
    assert repo_root() == REPO
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PlatformError, match="VDR_REPO"):
        repo_root()
