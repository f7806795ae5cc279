"""kmod's binary indexes read in place, checked against the text depmod writes beside them."""

from __future__ import annotations

from pathlib import Path

import pytest
from iscsiboot.agent.kmod import IndexFormatError, ModuleIndex, Trie, read_index
from iscsiboot.agent.phases.modules import Loader


def test_a_foreign_or_broken_binary_index_falls_back_to_the_text(tmp_path: Path) -> None:
    with pytest.raises(IndexFormatError):
        Trie(b"\x00" * 16)
    with pytest.raises(IndexFormatError):
        Trie(b"short")
    moddir = tmp_path / "lib/modules/6.1"
    moddir.mkdir(parents=True)
    (moddir / "modules.dep").write_text("kernel/drivers/net/dummy.ko:\n")
    (moddir / "modules.alias").write_text("alias rtnl-link-dummy dummy\n")
    (moddir / "modules.dep.bin").write_bytes(b"\xb0\x07\xfa\x57" + b"\x00" * 8)  # the old magic
    (moddir / "modules.alias.bin").write_bytes(b"")
    index = read_index(str(moddir))
    assert isinstance(index, ModuleIndex) and index.lookup("rtnl-link-dummy") == ["dummy"]
    sysfs, proc = tmp_path / "sys", tmp_path / "proc"
    (sysfs / "module").mkdir(parents=True)
    proc.mkdir()
    (proc / "modules").write_text("")
    loaded: list[str] = []
    loader = Loader(
        str(moddir),
        lambda path, _params: loaded.append(path),
        sysfs=str(sysfs),
        proc=str(proc),
        overlay_index=str(tmp_path / "x"),
    )
    assert loader.ensure("rtnl-link-dummy") == ["dummy"] and loaded == [
        str(moddir / "kernel/drivers/net/dummy.ko")
    ]
