"""Dataclasses' generated code, compiled at build time and looked up at boot."""

from __future__ import annotations

import dataclasses
import marshal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from iscsiboot.agent.startup import codecache

MODULE = """
from dataclasses import dataclass, field

@dataclass(frozen=True)
class Point:
    x: int
    y: int = 0
    tags: tuple[str, ...] = field(default=())
"""


def define() -> Any:
    namespace: dict[str, Any] = {"__name__": "points"}
    exec(compile(MODULE, "points.py", "exec", dont_inherit=True), namespace)
    return namespace["Point"]


@pytest.fixture(autouse=True)
def builtin_exec_again() -> Iterator[None]:
    yield
    codecache.uninstall()
    assert "exec" not in vars(dataclasses)


def test_recorded_code_is_used_and_behaves_the_same(tmp_path: Path) -> None:
    recorder = codecache.record()
    plain = define()
    assert len(recorder.table) >= 5  # __init__, __repr__, __eq__, __hash__, __setattr__, __delattr__
    path = tmp_path / "dataclasses.marshal"
    path.write_bytes(recorder.dump())
    codecache.uninstall()

    hook = codecache.install(str(path))
    assert hook is not None
    cached = define()
    assert hook.misses == 0 and hook.hits == len(recorder.table)
    a, b = cached(1, 2, ("x",)), plain(1, 2, ("x",))
    assert repr(a) == repr(b) == "Point(x=1, y=2, tags=('x',))"
    assert a == cached(1, 2, ("x",)) and a != cached(2) and hash(a) == hash(cached(1, 2, ("x",)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.x = 5


def test_a_source_not_in_the_table_compiles_as_before(tmp_path: Path) -> None:
    path = tmp_path / "dataclasses.marshal"
    path.write_bytes(marshal.dumps({"def unrelated(): pass": compile("pass", "<string>", "exec")}))
    hook = codecache.install(str(path))
    assert hook is not None
    point = define()
    assert hook.hits == 0 and hook.misses >= 5
    assert point(3).y == 0


def test_no_table_or_a_bad_one_installs_nothing(tmp_path: Path) -> None:
    assert codecache.install(str(tmp_path / "missing")) is None
    (tmp_path / "bad").write_bytes(b"not marshal data")
    assert codecache.install(str(tmp_path / "bad")) is None
    assert codecache.load(marshal.dumps([1, 2])) == {}
    assert "exec" not in vars(dataclasses)


DATACLASS_THEN_INSPECT = (
    "import sys\n"
    "{first}\n"
    "print('inspect' in sys.modules, 'ast' in sys.modules, 'dis' in sys.modules)\n"
    "from dataclasses import dataclass\n"
    "@dataclass(frozen=True)\n"
    "class Point:\n"
    "    x: int\n"
    "print(Point.__doc__, Point(1))\n"
    "import inspect\n"
    "print(inspect.signature(Point))\n"
)


def _run_python(code: str) -> list[str]:
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_dataclasses_comes_without_inspect_and_inspect_stays_whole() -> None:
    lines = _run_python(DATACLASS_THEN_INSPECT.format(first="from iscsiboot.agent.startup import codecache"))
    assert lines[0] == "False False False"  # neither inspect nor what it imports
    assert lines[1] == "Point Point(x=1)"  # the class's name as its docstring
    assert lines[2] == "(x: int) -> None"  # a later import inspect is the real module
    # the negative control: dataclasses imported first brings inspect and writes the signature
    plain = _run_python(DATACLASS_THEN_INSPECT.format(first="import dataclasses"))
    assert plain[0] == "True True True"
    assert plain[1] == "Point(x: int) Point(x=1)"
