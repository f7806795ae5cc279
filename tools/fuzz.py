#!/usr/bin/env python3
"""Run the fuzz tier's properties (tests/fuzz) with a large budget and print what they found.

Each round runs every property for ``--examples`` examples with a new seed, until
``--seconds`` have passed (a round that has started finishes).  A failure prints
hypothesis' shrunk example and the seed that reproduces it:

    .venv/bin/python tools/fuzz.py --examples 2000 --seconds 1800
    .venv/bin/python tools/fuzz.py --examples 500 --seconds 300 -k iscsi

The suite runs the same properties with a small fixed budget (tests/fuzz_support.py).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=2000, help="examples per property and round")
    parser.add_argument("--seconds", type=float, default=600.0, help="start no round after this long")
    parser.add_argument("--seed", type=int, default=None, help="the first round's seed (default: random)")
    parser.add_argument("-k", default=None, help="only the properties whose name matches (pytest -k)")
    args = parser.parse_args(argv)
    if args.examples < 1 or not 0 < args.seconds < 1e7:
        parser.error("--examples and --seconds must be positive")

    os.environ["ISCSIBOOT_FUZZ_EXAMPLES"] = str(args.examples)  # read by fuzz_support at import
    sys.path.insert(0, str(TESTS))
    import fuzz_support  # noqa: PLC0415  (after the budget is in the environment)
    import pytest  # noqa: PLC0415

    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 32)
    start = time.monotonic()
    rounds, failed_seeds = 0, []
    while rounds == 0 or time.monotonic() - start < args.seconds:
        pytest_args = [str(TESTS / "fuzz"), "-q", "-p", "no:cacheprovider", f"--hypothesis-seed={seed}"]
        pytest_args += ["-W", "ignore::pytest.PytestAssertRewriteWarning"]  # hypothesis came in first
        pytest_args += ["-k", args.k] if args.k else []
        print(f"round {rounds + 1}: seed {seed}", flush=True)
        code = pytest.main(pytest_args)
        rounds += 1
        if code == pytest.ExitCode.NO_TESTS_COLLECTED or code > pytest.ExitCode.TESTS_FAILED:
            print(f"pytest could not run the properties (exit {int(code)})", file=sys.stderr)
            return 2
        if code == pytest.ExitCode.TESTS_FAILED:
            failed_seeds.append(seed)
        seed = (seed + 1) & 0xFFFFFFFF
    elapsed = time.monotonic() - start
    print(
        f"fuzz: {fuzz_support.COUNT[0]} parser runs in {rounds} round(s), {elapsed:.0f} s, "
        f"{args.examples} per property and round; "
        + (f"failures with seeds {', '.join(map(str, failed_seeds))}" if failed_seeds else "no failure")
    )
    return 1 if failed_seeds else 0


if __name__ == "__main__":
    sys.exit(main())
