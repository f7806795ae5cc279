"""The targets' pure parts: istgt's files, the LIO VM's modules, requests and QEMU line, the plan's LUN."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from iscsiboot.errors import EnvironmentProblem, UsageError
from iscsiboot.model import Chap
from iscsiboot.qemu.istgt import IstgtConfig, auth_method, auth_text, config_text
from iscsiboot.qemu.lio import EMPTY_WORD, encode_request, module_order, serve_words, vm_argv
from iscsiboot.qemu.scenario import Account, Mode, ScenarioOptions, TargetSpec, plan
from iscsiboot.qemu.targets import TargetKind
from iscsiboot.secret import Secret

IQN = "iqn.2026-11.org.iscsiboot:htpc"
ME = "iqn.2026-11.org.iscsiboot:client"
PW, RPW = "secret-pass-12", "target-pass-34"


def _istgt(chap: Chap | None = None, reverse: Chap | None = None) -> IstgtConfig:
    return IstgtConfig(IQN, Path("/srv/disk.img"), ME, 3260, 3261, Path("/run/istgt"), chap, reverse)


def test_istgt_config_names_the_portal_initiator_and_lun_0() -> None:
    text = config_text(_istgt(Chap("box", Secret(PW)), Chap("nas", Secret(RPW))))
    assert "Portal DA1 127.0.0.1:3260" in text
    assert f'InitiatorName "{ME}"' in text and "Netmask 127.0.0.0/8" in text
    assert f'TargetName "{IQN}"' in text
    assert "LUN0 Storage /srv/disk.img Auto" in text
    assert "AuthMethod CHAP Mutual" in text and "AuthGroup AuthGroup1" in text
    assert PW not in text and RPW not in text  # the secrets live in the CHAP file alone


def test_istgt_auth_methods_and_file() -> None:
    assert auth_method(_istgt()) == "None"
    assert auth_method(_istgt(Chap("box", Secret(PW)))) == "CHAP"
    assert "AuthGroup" not in config_text(_istgt())
    assert auth_text(_istgt()) == ""
    one = auth_text(_istgt(Chap("box", Secret(PW))))
    assert one == f'[AuthGroup1]\n  Auth "box" "{PW}"\n'
    both = auth_text(_istgt(Chap("box", Secret(PW)), Chap("nas", Secret(RPW))))
    assert both.endswith(f'Auth "box" "{PW}" "nas" "{RPW}"\n')


def test_istgt_refuses_what_it_cannot_quote() -> None:
    with pytest.raises(UsageError):
        auth_text(_istgt(Chap("box", Secret('with"quote-12'))))


DEP = """\
kernel/drivers/target/iscsi/iscsi_target_mod.ko: kernel/drivers/target/target_core_mod.ko \
kernel/fs/configfs/configfs.ko
kernel/drivers/target/target_core_mod.ko: kernel/fs/configfs/configfs.ko
kernel/fs/configfs/configfs.ko:
kernel/crypto/crc32c_generic.ko:
kernel/arch/x86/crypto/crc32c-intel.ko:
"""


def test_module_order_loads_dependencies_first_once() -> None:
    order = module_order(DEP, ["configfs", "iscsi_target_mod", "crc32c-intel"])
    assert order == [
        "kernel/fs/configfs/configfs.ko",
        "kernel/drivers/target/target_core_mod.ko",
        "kernel/drivers/target/iscsi/iscsi_target_mod.ko",
        "kernel/arch/x86/crypto/crc32c-intel.ko",
    ]
    with pytest.raises(EnvironmentProblem):
        module_order(DEP, ["target_core_file"])


def test_requests_are_base64_words_with_empty_ones_marked() -> None:
    line = encode_request(["serve", "", 'a b"c'])
    words = line.decode().rstrip("\n").split(" ")
    assert words[1] == EMPTY_WORD and line.endswith(b"\n")
    assert base64.b64decode(words[2]).decode() == 'a b"c'


def _spec(*accounts: Account) -> TargetSpec:
    return TargetSpec(tid=1, iqn=IQN, lun=0, image=Path("/d.img"), accounts=accounts, delay=0.0)


def test_serve_words_carry_one_way_and_mutual_chap() -> None:
    assert serve_words(_spec(), ME) == ["serve", "/dev/vda", IQN, ME]
    one = Account("box", Secret(PW), outgoing=False)
    mutual = Account("nas", Secret(RPW), outgoing=True)
    assert serve_words(_spec(one), ME)[4:] == ["box", PW]
    assert serve_words(_spec(mutual, one), ME)[4:] == ["box", PW, "nas", RPW]


def test_lio_vm_is_reached_through_a_loopback_forward_only() -> None:
    argv = vm_argv(
        qemu="qemu",
        kernel=Path("/k"),
        initrd=Path("/i"),
        image=Path("/d.img"),
        console=Path("/c"),
        control=Path("/s"),
        port=40000,
    )
    netdev = argv[argv.index("-netdev") + 1]
    assert "restrict=on" in netdev and "hostfwd=tcp:127.0.0.1:40000-:3260" in netdev
    assert "file=/d.img,format=raw,if=virtio,cache=writeback" in argv


def test_plan_takes_the_lun_the_target_reported() -> None:
    for kind, usual in ((TargetKind.TGT, 1), (TargetKind.LIO, 0), (TargetKind.ISTGT, 0)):
        options = ScenarioOptions(target=kind)
        assert kind.usual_lun == usual
        assert plan(options, port=4000, workdir=Path("/w")).client.targets[0].lun == usual
        p = plan(options, port=4000, workdir=Path("/w"), lun=5)
        assert p.client.targets[0].lun == 5 and p.target.lun == 5
        assert p.ipxe_script is not None and ":4000:5:" in p.ipxe_script


def test_dhcp_mode_stays_with_tgt() -> None:
    with pytest.raises(UsageError):
        ScenarioOptions(mode=Mode.DHCP, target=TargetKind.LIO)
