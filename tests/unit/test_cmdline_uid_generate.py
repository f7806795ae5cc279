"""LibreELEC's ``@UID@`` in the generators: kept for the agent, iPXE's own setting, or refused.

Kernel command lines keep it in ``boot=``/``disk=`` values (LibreELEC's init
and the agent replace it there); iPXE scripts say ``${netX/mac:hexraw}``
(iPXE's boot NIC's MAC, lower-case hex without colons: the agent's id on
x86); a clients file gives each client its own id; a root path or dracut's
form, where nothing replaces it, is refused (``generate dnsmasq`` leaves
option 17 out).  The properties go through the project's own parser and its
reader of iPXE scripts.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from cmdline_support import cmdline_models, macs, targets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from iscsiboot.agent.init import with_client_uid
from iscsiboot.cli import main
from iscsiboot.cmdline import clients, generate, uid
from iscsiboot.cmdline.ipxescript import expands, read_script
from iscsiboot.cmdline.parse import parse
from iscsiboot.errors import RepresentError
from iscsiboot.model import BootConfig, Chap, Locator, LocatorKind, NetMode, Network, Target
from iscsiboot.secret import Secret

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
U = uid.PLACEHOLDER
MAC = "52:54:00:00:01:0a"
ID = "52540000010a"
MODEL = BootConfig(
    initiator=f"iqn.2026-11.org.example:{U}",
    targets=(
        Target(
            f"iqn.2026-11.org.example:htpc-{U}",
            "192.168.1.14",
            lun=1,
            chap=Chap(f"htpc-{U}", Secret(f"secret-{U}-12")),
        ),
    ),
    system=Locator(LocatorKind.LABEL, "System"),
    storage=Locator(LocatorKind.LABEL, f"Storage-{U}"),
)


#: what the kernel command line carries of MODEL (its forms have no LUN)
LINE_MODEL = replace(MODEL, targets=(replace(MODEL.targets[0], lun=None),))


def _client(mac: str = MAC) -> clients.Client:
    return clients.Client(mac, "htpc")


def _hexraw(word: str, mac: str) -> str:
    """``word`` as iPXE expands it on the machine with ``mac`` (settings type hexraw: "%02x" per byte)."""
    return word.replace(generate.IPXE_UID, bytes.fromhex(mac.replace(":", "")).hex())


# ---------------------------------------------------------------- kernel command lines


def test_extlinux_keeps_it_in_the_boot_and_disk_values_for_the_agent(tmp_path: Path) -> None:
    text = generate.extlinux(MODEL).text
    (append,) = [line.removeprefix("  APPEND ") for line in text.splitlines() if "APPEND" in line]
    assert f"iscsi_initiator=iqn.2026-11.org.example:{U}," in append
    assert f"disk=LABEL=Storage-{U}" in append.split()
    assert parse(append).config == LINE_MODEL  # the parser reads the values as written
    # the agent of the HTPC with MAC 52:54:00:00:01:0a (x86: no CPU serial) sees its own values
    nic = tmp_path / "class" / "net" / "eth0"
    (nic / "device").mkdir(parents=True)
    (nic / "type").write_text("1\n")
    (nic / "ifindex").write_text("2\n")
    (nic / "address").write_text(f"{MAC}\n")
    (tmp_path / "cpuinfo").write_text("processor\t: 0\n")
    seen = parse(with_client_uid(append, sysfs=str(tmp_path), cpuinfo=str(tmp_path / "cpuinfo"))).config
    assert seen == clients.for_client(LINE_MODEL, _client())
    assert seen.initiator == f"iqn.2026-11.org.example:{ID}"
    assert seen.targets[0].chap == Chap(f"htpc-{ID}", Secret(f"secret-{ID}-12"))
    assert str(seen.storage) == f"LABEL=Storage-{ID}"


def _with_uid(model: BootConfig, where: tuple[bool, ...]) -> BootConfig:
    """``model`` with ``@UID@`` appended to the values ``where`` picks (initiator, target names,
    CHAP names and secrets, system and storage locators)."""
    on = iter(where)

    def add(value: str, sep: str = "-") -> str:
        return value + sep + U if next(on, False) else value

    done: dict[Chap, Chap] = {}  # one account on both targets stays one (iPXE has one set)

    def chap(c: Chap | None) -> Chap | None:
        if c is not None and c not in done:
            done[c] = Chap(add(c.username), Secret(add(c.password.reveal(), "")))
        return None if c is None else done[c]

    def locator(loc: Locator | None) -> Locator | None:
        if loc is None or loc.kind is LocatorKind.UUID:
            return loc
        return replace(loc, value=add(loc.value))

    return replace(
        model,
        initiator=None if model.initiator is None else add(model.initiator),
        targets=tuple(
            replace(t, name=add(t.name), chap=chap(t.chap), reverse_chap=chap(t.reverse_chap))
            for t in model.targets
        ),
        system=locator(model.system),
        storage=locator(model.storage),
    )


def _uid_after_white_space(model: BootConfig) -> bool:
    return any(
        loc is not None and U in loc.value and any(c.isspace() for c in loc.value)
        for loc in (model.system, model.storage)
    )


@SETTINGS
@given(cmdline_models(), st.lists(st.booleans(), min_size=12, max_size=12), macs)
def test_one_command_line_serves_every_client(model: BootConfig, where: list[bool], mac: str) -> None:
    """generate, replace as the agent does, parse: each client's own model; refused only where
    the agent could not replace it (after white space in a quoted locator)."""
    model = _with_uid(model, tuple(where))
    try:
        text = generate.cmdline(model).text
    except RepresentError as exc:
        assert _uid_after_white_space(model), exc
        assert "white space" in str(exc)
        return
    assert not _uid_after_white_space(model)
    assert parse(text).config == model
    ident = uid.client_uid("", mac)
    assert parse(uid.substitute(text, ident)).config == clients.for_client(model, _client(mac)), text


@pytest.mark.parametrize(
    ("changes", "option"),
    [
        ({"network": Network(mode=NetMode.DHCP, hostname=None, device=f"eth{U}")}, "ip="),
        (
            {"targets": (), "target_from_dhcp": True, "network": Network(mode=NetMode.DHCP)},
            "iscsi_initiator=",
        ),
    ],
)
def test_uid_outside_boot_and_disk_is_refused(changes: dict[str, object], option: str) -> None:
    with pytest.raises(RepresentError, match=f"@UID@ in {option} would stay as written"):
        generate.cmdline(replace(MODEL, **changes))  # type: ignore[arg-type]


def test_extlinux_refuses_it_in_extra_options_and_paths() -> None:
    with pytest.raises(RepresentError, match="@UID@ in note="):
        generate.extlinux(MODEL, append_extra=(f"note={U}",))
    with pytest.raises(RepresentError, match="syslinux does not replace"):
        generate.extlinux(MODEL, kernel=f"/KERNEL-{U}")
    with pytest.raises(RepresentError, match="syslinux does not replace"):
        generate.extlinux(MODEL, initrd=f"/initrd-{U}")


def test_names_are_checked_as_a_client_sees_them() -> None:
    # '@' is no RFC 3722 character, but @UID@ is replaced before any initiator reads the name
    own = generate.cmdline(clients.for_client(MODEL, _client())).warnings
    assert [w.replace(U, ID) for w in generate.cmdline(MODEL).warnings] == list(own)
    with pytest.raises(RepresentError, match="initiator name"):
        generate.cmdline(replace(MODEL, initiator=f"iqn.2026-11.org.example:{U}_x"))
    # the length counts the longest id (12 digits) in place of @UID@
    long_name = "iqn.2026-11.org.example:" + "a" * (223 - 24 - 11) + U
    assert len(long_name) == 223 - 11 + 5
    with pytest.raises(RepresentError, match="223"):
        generate.cmdline(replace(MODEL, initiator=long_name))


# ---------------------------------------------------------------- iPXE


def test_ipxe_writes_its_own_setting_for_the_id() -> None:
    result = generate.ipxe(MODEL)
    words = {c.words[0:2]: c.words for c in read_script(result.text).commands()}
    assert words[("set", "initiator-iqn")][2] == "iqn.2026-11.org.example:${netX/mac:hexraw}"
    assert words[("set", "username")][2] == "htpc-${netX/mac:hexraw}"
    assert words[("set", "password")][2] == "secret-${netX/mac:hexraw}-12"
    sanboot = next(c.words[1] for c in read_script(result.text).commands() if c.words[0] == "sanboot")
    assert sanboot == "iscsi:192.168.1.14:::1:iqn.2026-11.org.example:htpc-${netX/mac:hexraw}"
    assert generate.IPXE_UID_WARNING in result.warnings
    assert U not in "\n".join(line for line in result.text.splitlines() if not line.startswith("#"))
    # the boot stick's script (generate usb) is the embedded form: the same words
    assert (
        "set initiator-iqn iqn.2026-11.org.example:${netX/mac:hexraw}"
        in generate.ipxe(MODEL, embedded=True).text.splitlines()
    )


@st.composite
def ipxe_models(draw: st.DrawFn) -> BootConfig:
    target = draw(targets(lun=True))
    storage = draw(st.none() | targets(lun=True))
    extra = () if storage is None else (replace(storage, chap=target.chap, reverse_chap=target.reverse_chap),)
    return BootConfig(
        initiator=draw(st.none() | st.just("iqn.2026-11.org.example:htpc")),
        targets=(target, *extra),
        storage_on_iscsi=bool(extra),
        storage=Locator(LocatorKind.LABEL, "Storage") if extra else None,
        system=Locator(LocatorKind.LABEL, "System"),
    )


@SETTINGS
@given(ipxe_models(), st.lists(st.booleans(), min_size=12, max_size=12), macs)
def test_each_machine_running_the_script_gets_its_own_values(
    model: BootConfig, where: list[bool], mac: str
) -> None:
    """iPXE's expansion of the script on the machine with ``mac`` gives that client's values;
    @UID@ never makes iPXE refuse a model it takes without."""
    with_uid = _with_uid(model, tuple(where))
    try:
        plain = generate.ipxe(model, attempts=1).text
    except RepresentError:
        with pytest.raises(RepresentError):
            generate.ipxe(with_uid, attempts=1)
        return
    text = generate.ipxe(with_uid, attempts=1).text
    own = clients.for_client(with_uid, _client(mac))
    expected = generate.ipxe(own, attempts=1).text
    got = read_script(text)
    for command, wanted in zip(got.commands(), read_script(expected).commands(), strict=True):
        assert not any(expands(w) and generate.IPXE_UID not in w for w in command.words)
        assert tuple(_hexraw(w, mac) for w in command.words) == wanted.words
    assert plain.count("${") == 0


# ---------------------------------------------------------------- root paths and dnsmasq


def _dnsmasq_test(tmp_path: Path, text: str) -> None:
    dnsmasq = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
    if not Path(dnsmasq).exists():
        pytest.skip("dnsmasq is not installed")
    conf = tmp_path / "dnsmasq.conf"
    conf.write_text(text)
    checked = subprocess.run(
        [dnsmasq, "--test", f"--conf-file={conf}"], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stderr


def test_a_root_path_cannot_carry_it() -> None:
    with pytest.raises(RepresentError, match="root path cannot carry @UID@"):
        generate.root_path(MODEL)
    with pytest.raises(RepresentError, match="root path cannot carry @UID@"):
        generate.root_path(replace(MODEL.targets[0], name="iqn.2026-11.org.example:htpc"), credentials=True)
    # without credentials only the name counts
    assert generate.root_path(replace(MODEL.targets[0], name="iqn.2026-11.org.example:htpc")).text
    with pytest.raises(RepresentError, match="dracut replaces it nowhere"):
        generate.dracut(replace(MODEL, storage=None))


def test_dnsmasq_leaves_the_root_path_out_and_still_serves_the_chain(tmp_path: Path) -> None:
    result = generate.dnsmasq(MODEL, dhcp_range="10.0.0.100,10.0.0.200,1h")
    assert generate.ROOT_PATH_UID_WARNING in result.warnings
    assert "root-path" not in result.text and U not in result.text.replace("holds @UID@", "")
    assert "dhcp-boot=tag:ipxe,boot.ipxe" in result.text.splitlines()
    _dnsmasq_test(tmp_path, result.text)
    # @UID@ elsewhere than in the target name leaves the root path as it was
    named = replace(MODEL, targets=(replace(MODEL.targets[0], name="iqn.2026-11.org.example:nas"),))
    assert "option:root-path" in generate.dnsmasq(named, dhcp_range="10.0.0.100,10.0.0.200,1h").text


def test_a_clients_file_gives_each_client_its_own_id(tmp_path: Path) -> None:
    listed = clients.parse_clients(f"{MAC} htpc1 1\n52:54:00:00:01:0b htpc2 iqn.2026-11.org.example:{U}\n")
    (one, m1), (two, m2) = clients.client_configs(MODEL, listed, {})
    assert m1.initiator == f"iqn.2026-11.org.example:{ID}.htpc1"
    assert m1.targets[0].name == f"iqn.2026-11.org.example:htpc-{ID}"
    assert m2.targets[0].name == "iqn.2026-11.org.example:52540000010b"
    assert str(m2.storage) == "LABEL=Storage-52540000010b"
    text = clients.dnsmasq(((one, m1), (two, m2)), dhcp_range="10.0.0.100,10.0.0.200,1h").text
    assert f'option:root-path,"iscsi:192.168.1.14:::1:iqn.2026-11.org.example:htpc-{ID}"' in text
    assert U not in text
    _dnsmasq_test(tmp_path, text)
    # the configurations as given (with @UID@) come out the same: each block takes its MAC's id
    assert (
        clients.dnsmasq(
            ((one, MODEL), (two, replace(MODEL, targets=(replace(m2.targets[0], name=f"x:{U}"),)))),
            dhcp_range="10.0.0.100,10.0.0.200,1h",
        ).text.count("52540000010b")
        == 1
    )
    script = generate.ipxe(m1).text
    assert f"set initiator-iqn iqn.2026-11.org.example:{ID}.htpc1" in script.splitlines()
    assert "${" not in script


# ---------------------------------------------------------------- the command line


@pytest.mark.parametrize(
    ("kind", "extra", "match"),
    [
        ("root-path", (), "root path cannot carry @UID@"),
        ("dracut", (), "dracut replaces it nowhere"),
        ("extlinux", ("--append", f"note={U}"), "@UID@ in note="),
        ("extlinux", ("--kernel", f"/K{U}"), "syslinux does not replace"),
        ("ipxe", ("--lun-from-target",), "--lun-from-target logs in as one machine"),
    ],
)
def test_the_cli_refuses_in_one_line_with_exit_2(
    kind: str, extra: tuple[str, ...], match: str, capsys: pytest.CaptureFixture[str]
) -> None:
    model = ["--initiator", f"iqn.2026-11.org.example:{U}", "--target-ip", "192.168.1.14"]
    model += ["--target-name", f"iqn.2026-11.org.example:htpc-{U}", "--system", "LABEL=System"]
    assert main(["generate", kind, *model, *extra]) == 2
    err = capsys.readouterr().err
    assert match in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("kind", ["cmdline", "extlinux", "ipxe", "dnsmasq"])
def test_the_cli_writes_the_others(kind: str, capsys: pytest.CaptureFixture[str]) -> None:
    model = ["--initiator", f"iqn.2026-11.org.example:{U}", "--target-ip", "192.168.1.14", "--lun", "1"]
    model += ["--target-name", f"iqn.2026-11.org.example:htpc-{U}", "--system", "LABEL=System"]
    model += ["--storage", f"LABEL=Storage-{U}"]
    assert main(["generate", kind, *model]) == 0
    out = capsys.readouterr().out
    assert (generate.IPXE_UID in out) == (kind == "ipxe")
    assert (f"disk=LABEL=Storage-{U}" in out) == (kind in ("cmdline", "extlinux"))
