"""Compile source files into sourceless ``.pyc`` files that name their place in the image.

Run by the builder as ``python3.11 -S -X no_debug_ranges -P compiler.py JOBS OPTIMIZE OUT``:
``JOBS`` is a JSON list of (source, archive path, keep line numbers) triples; the i-th
job's code goes to ``OUT/i.pyc``, with unchecked-hash invalidation (PEP 552), and its code
objects name ``/archive`` without the ``c``.

A job that keeps no line numbers gets a location table that says "no location" for every
instruction: one byte per eight code units, instead of a line table that takes about a fifth
of the code's size after xz.  Tracebacks, warnings and logging work through such code; they
give its lines as -1 (or None).  Standard library only.
"""

import importlib.util
import json
import marshal
import sys
import types

# CPython 3.11's location table (Objects/locations.md): an entry is one byte
# 1CCCCLLL (code C, L + 1 code units) and whatever the code needs after it; code 15,
# "no location", needs nothing more.
NO_LOCATION = 15
MAX_UNITS = 8  # code units one entry covers at most


def no_lines(units: int) -> bytes:
    """A location table for ``units`` code units, none of which has a location."""
    table = bytearray()
    while units > 0:
        step = min(units, MAX_UNITS)
        table.append(0x80 | NO_LOCATION << 3 | (step - 1))
        units -= step
    return bytes(table)


def without_lines(code: types.CodeType) -> types.CodeType:
    """``code`` and the code objects in its constants, without line numbers."""
    consts = tuple(without_lines(c) if isinstance(c, types.CodeType) else c for c in code.co_consts)
    return code.replace(co_linetable=no_lines(len(code.co_code) // 2), co_consts=consts)


def pyc(source: bytes, code: types.CodeType) -> bytes:
    """A hash-based .pyc that is never checked against its source (flags 1)."""
    flags = (1).to_bytes(4, "little")
    return importlib.util.MAGIC_NUMBER + flags + importlib.util.source_hash(source) + marshal.dumps(code)


def main(argv: list[str]) -> int:
    jobs: list[list[object]] = json.loads(argv[1])
    optimize, out = int(argv[2]), argv[3]
    for i, (source, archive, lines) in enumerate(jobs):
        with open(str(source), "rb") as handle:
            data = handle.read()
        name = "/" + str(archive).removesuffix("c")
        code = compile(data, name, "exec", dont_inherit=True, optimize=optimize)
        if not lines:
            code = without_lines(code)
        with open(f"{out}/{i}.pyc", "wb") as handle:
            handle.write(pyc(data, code))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
