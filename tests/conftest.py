"""Test tiers, one folder each: unit (always), fuzz (always: hypothesis on untrusted bytes with
a fixed budget), root (loop devices, mounts), target (tgtd), netns (network namespaces), vm (QEMU).

A test's tier is the folder it lives in (``tests/<tier>/``): this file gives it the
tier's marker, so ``-m "not vm"`` still selects, and a tier marker written by hand
that disagrees with the folder fails collection.  Support modules stay in ``tests/``.

On a developer's laptop the root, target, netns and vm tiers may skip, with the
reason printed.  When the environment variable CI is set, a skip in one of those
tiers fails the run: CI must exercise the real components.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
TIERS = ("root", "target", "netns", "vm")
FOLDERS = ("unit", "fuzz", *TIERS)
_tier_skips: list[str] = []


def tier_of(path: Path) -> str:
    """The tier of a test file: the folder under ``tests/`` that holds it."""
    parts = path.resolve().relative_to(HERE).parts
    if len(parts) < 2 or parts[0] not in FOLDERS:
        raise pytest.UsageError(f"{path}: a test file lives in one of tests/{{{','.join(FOLDERS)}}}/")
    return parts[0]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        tier = tier_of(item.path)
        written = {m.name for m in item.iter_markers() if m.name in (*TIERS, "fuzz")}
        if written - {tier}:
            raise pytest.UsageError(
                f"{item.nodeid}: marked {', '.join(sorted(written))} but lives in tests/{tier}/ "
                "(the folder is the tier: move the test)"
            )
        if tier != "unit":
            item.add_marker(getattr(pytest.mark, tier))


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
