"""Compile source files into sourceless ``.pyc`` files that name their place in the image.

Run by the builder as ``python3.11 -S -X no_debug_ranges -P compiler.py JOBS OPTIMIZE OUT``:
``JOBS`` is a JSON list of (source, archive path) pairs; the i-th job's code
goes to ``OUT/i.pyc``, with unchecked-hash invalidation, and its code objects
name ``/archive`` without the ``c``.
"""

import json
import py_compile
import sys


def main(argv: list[str]) -> int:
    jobs: list[list[str]] = json.loads(argv[1])
    optimize, out = int(argv[2]), argv[3]
    for i, (source, archive) in enumerate(jobs):
        py_compile.compile(
            source,
            cfile=f"{out}/{i}.pyc",
            dfile="/" + archive.removesuffix("c"),
            doraise=True,
            optimize=optimize,
            invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
