"""Hypothesis strategies for boot models that the command line forms can carry."""

from __future__ import annotations

import ipaddress
import string
import sys
from pathlib import Path

from hypothesis import strategies as st
from iscsiboot.model import LUN_MAX, BootConfig, Chap, Locator, LocatorKind, NetMode, Network, Target
from iscsiboot.proc import Result, run
from iscsiboot.secret import Secret

TESTS = Path(__file__).resolve().parent
HOWTO = TESTS / "data" / "cmdline" / "openelec-howto-forms.txt"  # the forms users copy from the how-to
GOLDEN = TESTS / "golden" / "cmdline"
ISCSIBOOT = Path(sys.executable).with_name("iscsiboot")

_LABEL = st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=8)


def run_cli(*args: str, stdin: str | None = None) -> Result:
    """Run the installed ``iscsiboot`` console script (exit code, stdout, stderr)."""
    return run([str(ISCSIBOOT), *args], what="run iscsiboot", check=False, input_text=stdin, timeout=60)


@st.composite
def iqns(draw: st.DrawFn) -> str:
    year = draw(st.integers(2000, 2030))
    month = draw(st.integers(1, 12))
    domain = ".".join(draw(st.lists(_LABEL, min_size=1, max_size=3)))
    suffix = draw(st.text(string.ascii_lowercase + string.digits + ".:-", min_size=0, max_size=12))
    return f"iqn.{year}-{month:02d}.{domain}" + (f":x{suffix}" if suffix else "")


hostnames = st.builds(
    lambda first, rest: ".".join([f"h{first}", *rest]),
    _LABEL,
    st.lists(_LABEL.map(lambda s: f"d{s}"), max_size=2),
)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
addresses = st.one_of(ipv4, ipv6, hostnames)

# Printable ASCII without white space, quotes, commas, colons and '@': these
# go everywhere (OpenELEC spec, RFC 4173 credentials, iPXE settings).
_SAFE = "".join(c for c in string.printable if c not in string.whitespace + "\"',:@\\$")
safe_words = st.text(_SAFE, min_size=1, max_size=16)


@st.composite
def chaps(draw: st.DrawFn) -> Chap:
    return Chap(draw(safe_words), Secret(draw(safe_words)))


@st.composite
def targets(draw: st.DrawFn, *, lun: bool) -> Target:
    chap = draw(st.none() | chaps())
    reverse = draw(st.none() | chaps()) if chap is not None else None
    return Target(
        name=draw(iqns()),
        address=draw(addresses),
        port=draw(st.integers(1, 65535)),
        group=draw(st.integers(0, 65535)),
        lun=draw(st.none() | st.integers(0, LUN_MAX)) if lun else None,
        chap=chap,
        reverse_chap=reverse,
    )


# Locator values: anything printable but the comma and the quote; spaces are quoted.
_LOCATOR_TEXT = st.text(string.ascii_letters + string.digits + " -_.=/+", min_size=1, max_size=12).filter(
    lambda s: s.strip() == s
)
locators = st.one_of(
    _LOCATOR_TEXT.map(lambda v: Locator(LocatorKind.LABEL, v)),
    st.uuids().map(lambda u: Locator(LocatorKind.UUID, str(u))),
    _LABEL.map(lambda v: Locator(LocatorKind.PATH, f"/dev/{v}")),
)

macs = st.binary(min_size=6, max_size=6).map(lambda b: ":".join(f"{x:02x}" for x in b))
devices = st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=8).map(lambda s: f"e{s}")


@st.composite
def networks(draw: st.DrawFn) -> Network:
    mode = draw(st.sampled_from(list(NetMode)))
    mac = draw(st.none() | macs)
    if mode in (NetMode.UNSET, NetMode.FIRMWARE):
        return Network(mode=mode, mac=mac)
    device = draw(st.none() | devices)
    hostname = draw(st.none() | hostnames)
    if mode is not NetMode.STATIC:
        dns = tuple(draw(st.lists(ipv4 | ipv6, max_size=2)))
        server = draw(st.none() | ipv4)
        return Network(mode=mode, mac=mac, device=device, hostname=hostname, dns=dns, server=server)
    v6 = draw(st.booleans())
    addr = ipv6 if v6 else ipv4
    return Network(
        mode=mode,
        mac=mac,
        device=device,
        hostname=hostname,
        address=draw(addr),
        prefix=draw(st.integers(0, 128 if v6 else 32)),
        gateway=draw(st.none() | addr),
        server=draw(st.none() | addr),
        dns=tuple(draw(st.lists(addr, max_size=2))),
    )


@st.composite
def cmdline_models(draw: st.DrawFn) -> BootConfig:
    """Models the OpenELEC ``boot=``/``disk=`` form carries exactly."""
    kind = draw(st.sampled_from(["firmware", "explicit", "local"]))
    network = draw(networks())
    storage = draw(st.none() | locators)
    storage_on_iscsi = storage is not None and kind != "local" and draw(st.booleans())
    if kind == "local":
        return BootConfig(network=network, system=draw(st.none() | locators), storage=storage)
    system = draw(locators)
    if kind == "firmware":
        return BootConfig(
            firmware=True, network=network, system=system, storage=storage, storage_on_iscsi=storage_on_iscsi
        )
    count = draw(st.integers(1, 2)) if storage_on_iscsi else 1
    tgts = draw(st.lists(targets(lun=False), min_size=count, max_size=count, unique=True))
    return BootConfig(
        initiator=draw(iqns()),
        targets=tuple(tgts),
        network=network,
        system=system,
        storage=storage,
        storage_on_iscsi=storage_on_iscsi,
    )


@st.composite
def dracut_models(draw: st.DrawFn) -> BootConfig:
    """Models dracut's ``rd.iscsi.*``/``netroot=`` form carries exactly."""
    group = draw(st.integers(0, 65535))
    tgts = draw(st.lists(targets(lun=True), min_size=1, max_size=3, unique=True))
    tgts = [Target(t.name, t.address, t.port, group, t.lun, t.chap, t.reverse_chap) for t in tgts]
    if len(set(tgts)) != len(tgts):
        tgts = tgts[:1]
    return BootConfig(
        firmware=draw(st.booleans()),
        initiator=draw(st.none() | iqns()),
        targets=tuple(tgts),
        network=draw(networks()),
        system=draw(st.none() | locators),
    )


def normal_ip(text: str) -> str:
    return str(ipaddress.ip_address(text))
