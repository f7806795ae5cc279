"""The dhcp scenario as a pure plan: netroot=dhcp on the kernel line, the target in dnsmasq's option 17."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from iscsiboot.cmdline.parse import parse, tokenize
from iscsiboot.errors import UsageError
from iscsiboot.proc import run, which
from iscsiboot.qemu.netlab import SERVER_ADDRESS, LabNames, listening
from iscsiboot.qemu.scenario import DEFAULT_INITIATOR, DEFAULT_TARGET, Mode, Plan, ScenarioOptions, plan
from iscsiboot.secret import Secret

LAB = LabNames("iscsiboot-test-ns")
ROOT_PATH_LINE = f'dhcp-option=tag:!ipxe,option:root-path,"iscsi:{SERVER_ADDRESS}:::1:{DEFAULT_TARGET}"'


def _plan(**kw: object) -> Plan:
    options = ScenarioOptions(mode=Mode.DHCP, **kw)  # type: ignore[arg-type]
    return plan(options, port=3260, workdir=Path("/tmp/w"), kernel=Path("/k"), initrd=Path("/i"), lab=LAB)


def test_the_kernel_line_says_netroot_dhcp_and_nothing_of_the_target() -> None:
    p = _plan()
    words = tokenize(p.append)
    assert {"ip=dhcp", "netroot=dhcp", f"rd.iscsi.initiator={DEFAULT_INITIATOR}"} <= set(words)
    assert {"root=LABEL=System", "disk=LABEL=Storage"} <= set(words)
    assert DEFAULT_TARGET not in p.append and SERVER_ADDRESS not in p.append
    cfg = parse(p.append).config
    assert cfg.target_from_dhcp and not cfg.targets and cfg.initiator == DEFAULT_INITIATOR


def test_qemu_runs_in_the_namespace_on_its_tap() -> None:
    argv = _plan().qemu_argv
    assert argv[:4] == ("ip", "netns", "exec", LAB.namespace)
    assert f"tap,id=n0,ifname={LAB.tap},script=no,downscript=no" in argv
    assert not any(a.startswith("user,") for a in argv)
    assert "namespace iscsiboot-test-ns" in _plan().describe()


def test_dnsmasq_sends_the_root_path_unless_the_fault_drops_it(tmp_path: Path) -> None:
    config = _plan().dnsmasq_config
    assert config is not None and ROOT_PATH_LINE in config.splitlines()
    assert f"interface={LAB.bridge}" in config.splitlines()
    dropped = _plan(no_root_path=True).dnsmasq_config
    assert dropped is not None and "option:root-path" not in dropped
    assert dropped.replace("\n", "") == config.replace(ROOT_PATH_LINE + "\n", "").replace("\n", "")
    try:
        dnsmasq = which("dnsmasq")
    except Exception:
        pytest.skip("dnsmasq not installed")
    conf = tmp_path / "dnsmasq.conf"
    conf.write_text(config)
    checked = run([dnsmasq, "--test", f"--conf-file={conf}"], what="check", check=False)
    assert checked.returncode == 0, checked.stderr


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"mode": Mode.CMDLINE, "no_root_path": True}, "--mode dhcp"),
        ({"mode": Mode.DHCP, "username": "u", "password": Secret("a-secret-of-12")}, "CHAP"),
    ],
)
def test_options_that_do_not_fit_the_dhcp_mode(kw: dict[str, object], needle: str) -> None:
    with pytest.raises(UsageError, match=needle):
        ScenarioOptions(**kw)  # type: ignore[arg-type]


def test_only_the_dhcp_mode_has_a_namespace() -> None:
    with pytest.raises(UsageError):
        plan(ScenarioOptions(mode=Mode.CMDLINE), port=1, workdir=Path("/tmp/w"), kernel=Path("/k"),
             initrd=Path("/i"), lab=LAB)  # fmt: skip
    with pytest.raises(UsageError):
        plan(
            ScenarioOptions(mode=Mode.DHCP),
            port=1,
            workdir=Path("/tmp/w"),
            kernel=Path("/k"),
            initrd=Path("/i"),
        )


def test_a_process_in_this_namespace_is_not_in_the_lab() -> None:
    assert not listening(os.getpid(), 22) and not listening(os.getpid(), 67, udp=True)
