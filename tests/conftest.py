"""Test tiers: unit (always), root (loop devices), target (tgtd), netns (namespaces), vm (QEMU).

On a developer's laptop the target, netns and vm tiers may skip, with the
reason printed.  When the environment variable CI is set, a skip in one of
those tiers fails the run: CI must exercise the real components.
"""

from __future__ import annotations

import os

import pytest

TIERS = ("root", "target", "netns", "vm")
_tier_skips: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and any(tier in report.keywords for tier in TIERS):
        _tier_skips.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("CI") and _tier_skips:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if os.environ.get("CI") and _tier_skips:
        terminalreporter.section("tier tests skipped under CI (a failure)")
        for nodeid in _tier_skips:
            terminalreporter.write_line(nodeid)
