"""Shared pytest set-up: the checkout's sources come first on sys.path, and with CI=true a skipped test
fails the run (a missing service must never pass unnoticed in CI)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("VDR_REPO", str(REPO))
_paths = [REPO / "src", REPO / "web", REPO / "drivers", *sorted(p for p in (REPO / "agents").glob("*") if p.is_dir())]
for _p in reversed(_paths):
    if _p.is_dir() and str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_sessionfinish(session, exitstatus):
    if not IN_CI:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if skipped:
        for report in skipped:
            reporter.write_line(f"CI=true: skipped test counts as a failure: {report.nodeid} {report.longrepr}")
        session.exitstatus = 1


FIGURES: list[tuple[str, str]] = []


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if FIGURES:
        terminalreporter.section("measured figures")
        for label, text in FIGURES:
            terminalreporter.write_line(f"{label}: {text}")


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def figure():
    """Record a measured figure; every figure is printed in the run's summary (CI logs show them)."""

    def add(label: str, text: str) -> None:
        FIGURES.append((label, text))

    return add
