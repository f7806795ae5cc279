"""The ssl stand-in of lean images offers every ssl name asyncio and pyroute2 reach for."""

from __future__ import annotations

import re
import socket
import types
from asyncio import base_events
from pathlib import Path

import pytest
from iscsiboot.initramfs import pyruntime

STDLIB = Path(pyruntime.STDLIB)


def _shim() -> types.ModuleType:
    module = types.ModuleType("ssl")
    source = (pyruntime.STANDINS / pyruntime.LEAN["ssl.py"]).read_text()
    exec(compile(source, "ssl.py", "exec"), module.__dict__)
    return module


def _ssl_names(folder: Path) -> set[str]:
    names: set[str] = set()
    for path in folder.rglob("*.py"):
        names.update(re.findall(r"\bssl\.([A-Za-z_]\w*)", path.read_text(errors="replace")))
    return names


def test_shim_has_every_ssl_name_asyncio_uses() -> None:
    folder = STDLIB / "asyncio"
    if not folder.is_dir():
        pytest.skip(f"{folder} is missing (python3.11-minimal)")
    shim = _shim()
    missing = sorted(n for n in _ssl_names(folder) if not hasattr(shim, n))
    assert not missing, f"the ssl stand-in lacks {missing}"


def test_shim_has_every_ssl_name_pyroute2_uses() -> None:
    folder = pyruntime.site_packages() / "pyroute2"
    shim = _shim()
    missing = sorted(n for n in _ssl_names(folder) if not hasattr(shim, n))
    assert not missing, f"the ssl stand-in lacks {missing}"


def test_asyncio_socket_calls_work_with_the_shim(monkeypatch: pytest.MonkeyPatch) -> None:
    """asyncio's sock_* methods check ``isinstance(sock, ssl.SSLSocket)`` (the DHCP client uses them)."""
    monkeypatch.setattr(base_events, "ssl", _shim())
    a, b = socket.socketpair()
    try:
        base_events._check_ssl_socket(a)  # type: ignore[attr-defined]  # private, not in the stubs; raises AttributeError without SSLSocket
    finally:
        a.close()
        b.close()
    shim = _shim()
    with pytest.raises(shim.SSLError):
        shim.create_default_context()


def test_stand_ins_import_but_refuse_use(tmp_path: Path) -> None:
    """The unused-module stand-ins import cleanly, as the libraries do, and fail loudly when called."""
    pyruntime.add_lean(tmp_path)
    names = sorted(p.stem for p in tmp_path.glob("*.py"))
    assert names == sorted(["ssl", *pyruntime.BLOCKED, *pyruntime.UNUSED])
    for name in pyruntime.BLOCKED:  # a blocker refuses the import, as a missing module would
        with pytest.raises(ImportError, match="not part of the iscsiboot initramfs"):
            exec(compile((tmp_path / f"{name}.py").read_text(), f"{name}.py", "exec"), {})
    for name in pyruntime.UNUSED:
        module = types.ModuleType(name)
        exec(compile((tmp_path / f"{name}.py").read_text(), f"{name}.py", "exec"), module.__dict__)
        placeholder = module.Pipe if name == "multiprocessing" else module.load
        with pytest.raises(RuntimeError, match="not part of the iscsiboot initramfs"):
            placeholder()
        assert not hasattr(module, "__path__")  # not a package: submodule imports fail as usual
    mock = types.ModuleType("unittest.mock")
    exec(compile((tmp_path / "unittest" / "mock.py").read_text(), "mock.py", "exec"), mock.__dict__)
    made = mock.Mock()  # what pyroute2 does at class definition
    with pytest.raises(AttributeError, match="not part of the iscsiboot initramfs"):
        made.put_nowait  # noqa: B018
