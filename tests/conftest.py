"""Shared pytest set-up: the checkout the tools work on (VDR_REPO), and with CI=true a skipped test fails the
run (a missing service must never pass unnoticed in CI). Imports need no sys.path edit: dr_common, dr_ops and
dr_tools are installed by scripts/bootstrap, the agents' folders are pytest's `pythonpath` (setup.cfg)."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("VDR_REPO", str(REPO))

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
