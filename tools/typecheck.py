"""Run ``mypy --strict`` on the installed layout, the tests and the tools.

The folders are mapped into ``iscsiboot.<folder>`` by setuptools, which mypy
cannot follow from the source tree.  This script lays out the same package
shape as symbolic links under ``build/typecheck/`` and checks that.

The tests import their support modules (``tests/*.py``) by bare name, so
``tests/`` is on the module search path.  Tier folders hold files with the
same basename (``unit/test_doctor.py``, ``target/test_doctor.py``); explicit
package bases name them by their tier folder, which keeps the names apart.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    mapping: dict[str, str] = config["tool"]["setuptools"]["package-dir"]
    tree = ROOT / "build" / "typecheck"
    shutil.rmtree(tree, ignore_errors=True)
    top = tree / "iscsiboot"
    top.mkdir(parents=True)
    for entry in (ROOT / mapping["iscsiboot"]).iterdir():
        if entry.suffix in (".py", ".typed"):
            (top / entry.name).symlink_to(entry)
    for package, folder in mapping.items():
        if package != "iscsiboot":
            (top / package.split(".", 1)[1]).symlink_to(ROOT / folder, target_is_directory=True)
    tests = ROOT / "tests"
    tools = sorted(str(path) for path in (ROOT / "tools").glob("*.py"))
    cmd = [
        sys.executable,
        "-m",
        "mypy",
        "--config-file",
        str(ROOT / "pyproject.toml"),
        "--explicit-package-bases",
        "iscsiboot",
        str(tests),
        *tools,
    ]
    env = {**os.environ, "MYPYPATH": str(tests)}
    return subprocess.call(cmd, cwd=tree, env=env)


if __name__ == "__main__":
    raise SystemExit(main())
