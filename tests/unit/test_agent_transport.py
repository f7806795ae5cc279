"""The transport choice: the option, what the kernel has, what the image carries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from iscsiboot.agent.options import parse_options
from iscsiboot.agent.phases.modules import NBD_PARAMS, Loader
from iscsiboot.agent.plan import needed_modules
from iscsiboot.agent.report import RunResult
from iscsiboot.agent.transport import MODULES, Transport, choose
from iscsiboot.errors import ParseError
from iscsiboot.model import BootConfig


def test_the_option_defaults_to_auto_and_refuses_unknown_names() -> None:
    assert parse_options("quiet").transport == "auto"
    assert parse_options("iscsiboot.transport=nbd").transport == "nbd"
    with pytest.raises(ParseError, match="unknown transport 'tcp'"):
        parse_options("iscsiboot.transport=tcp")


@pytest.mark.parametrize(
    ("kernel", "image", "expected"),
    [(True, False, Transport.KERNEL), (False, True, Transport.KERNEL), (False, False, Transport.NBD)],
)
def test_auto_takes_kernel_iscsi_where_there_is_some(kernel: bool, image: bool, expected: Transport) -> None:
    assert choose("auto", kernel_has_iscsi=kernel, image_has_iscsi=image) is expected
    assert choose("nbd", kernel_has_iscsi=True, image_has_iscsi=True) is Transport.NBD
    assert choose("kernel", kernel_has_iscsi=False, image_has_iscsi=False) is Transport.KERNEL


def _loader(tmp: Path, dep: str, *, builtin: str = "") -> tuple[Loader, list[tuple[str, str]]]:
    moddir, sysfs, proc = tmp / "lib/modules/6.1", tmp / "sys", tmp / "proc"
    moddir.mkdir(parents=True)
    (moddir / "modules.dep").write_text(dep)
    (moddir / "modules.builtin").write_text(builtin)
    (sysfs / "module").mkdir(parents=True)
    proc.mkdir()
    (proc / "modules").write_text("")
    calls: list[tuple[str, str]] = []
    loader = Loader(
        str(moddir), lambda path, params: calls.append((Path(path).name, params)),
        sysfs=str(sysfs), proc=str(proc), overlay_index=str(tmp / "none"),
    )  # fmt: skip
    return loader, calls


def test_an_image_without_iscsi_modules_boots_over_nbd_with_partitions(tmp_path: Path) -> None:
    loader, calls = _loader(tmp_path, "kernel/drivers/block/nbd.ko:\nkernel/fs/ext4/ext4.ko:\n")
    assert loader.transport("auto") is Transport.NBD
    loader.ensure("nbd")
    assert calls == [("nbd.ko", NBD_PARAMS)]
    assert "max_part=" in NBD_PARAMS  # without it the kernel shows no nbd0p1, nbd0p2


def test_an_image_with_iscsi_tcp_or_a_kernel_with_it_built_in_boots_over_kernel_iscsi(tmp_path: Path) -> None:
    loader, calls = _loader(tmp_path / "a", "kernel/drivers/scsi/iscsi_tcp.ko:\n")
    assert loader.transport("auto") is Transport.KERNEL
    loader.ensure("iscsi_tcp")
    assert calls == [("iscsi_tcp.ko", "")]
    builtin, _calls = _loader(tmp_path / "b", "", builtin="kernel/drivers/scsi/iscsi_tcp.ko\n")
    assert builtin.transport("auto") is Transport.KERNEL
    bare, _calls = _loader(tmp_path / "c", "")
    (tmp_path / "c/sys/class/iscsi_transport/tcp").mkdir(parents=True)
    assert bare.transport("auto") is Transport.KERNEL  # the running kernel has it


def test_the_nbd_transport_loads_no_iscsi_module_and_no_ibft_driver() -> None:
    for name in ("iscsi_tcp", "sd_mod", "iscsi_ibft"):
        _first, rest = needed_modules(BootConfig(firmware=True), ("virtio_net",), Transport.NBD)
        assert name not in rest
        assert name not in MODULES[Transport.NBD].base
    _first, rest = needed_modules(BootConfig(firmware=True), (), Transport.KERNEL)
    assert "iscsi_ibft" in rest and "iscsi_tcp" in rest


def test_ext4_gets_its_crc32c_on_both_transports() -> None:
    """ext4 asks for crc32c at mount time (metadata checksums); without it the mount fails (ENOENT)."""
    for transport in Transport:
        _first, rest = needed_modules(BootConfig(firmware=True), (), transport)
        assert "crypto-crc32c" in rest
        assert "crypto-crc32c" in MODULES[transport].base


def test_the_result_names_the_transport_and_where_the_ibft_was_read() -> None:
    acpi = "ACPI table /sys/firmware/acpi/tables/iBFT"
    result = RunResult(ok=True, phase="done", transport="nbd", ibft=acpi)
    data = json.loads(json.dumps(result.to_dict()))
    assert (data["transport"], data["ibft"]) == ("nbd", acpi)
    assert RunResult.from_dict(data) == result
    assert RunResult.from_dict({"ok": False, "phase": "config"}).ibft is None  # older results
