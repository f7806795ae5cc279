"""The target from the DHCP server: the RFC 4173 root path of option 17.

A command line with dracut's ``netroot=dhcp`` or ``root=dhcp`` (``dhcp6``:
from a DHCPv6 server), or ``boot=ISCSI=dhcp,<locator>`` (this project's form
beside OpenELEC's ``ISCSI=auto``) names no target: the boot takes it from the
root path its DHCP lease carries.  The model says so with
``target_from_dhcp``; :func:`with_root_path` turns such a model and a root
path into the model with that target, for the boot agent and for
``iscsiboot doctor --dhcp-root-path`` alike.

The root path is parsed by :func:`~iscsiboot.cmdline.rootpath.parse_root_path`,
the parser of ``netroot=iscsi:``: credentials in it are CHAP secrets, never
shown in a message.

Pure: no I/O (the boot agent imports this on its way to the login).
"""

from __future__ import annotations

import dataclasses

from iscsiboot.cmdline.rootpath import parse_root_path, redact_root_path
from iscsiboot.errors import ParseError
from iscsiboot.model import BootConfig, NetMode, Network

#: What a lease without option 17 means, in words.
NO_ROOT_PATH = "the DHCP server sent no root path (option 17)"
#: The example the fix shows: the form ``iscsiboot generate root-path`` writes.
EXAMPLE_ROOT_PATH = "iscsi:<server>::<port>:<LUN>:<target name>"
# dracut's keys that say something of the target; with the target from DHCP the root path says it
_TARGET_KEYS = ("rd.iscsi.initiator",)


def dnsmasq_root_path_line(root_path: str) -> str:
    """The dnsmasq line that sends ``root_path`` as option 17 (``iscsiboot generate dnsmasq`` writes it).

    Only to clients that are not iPXE (tag ``ipxe``): iPXE given a root path
    beside a boot file hooks that SAN device before it loads the file, with
    no CHAP credentials yet (the script sets them), and stops when the
    target refuses the login; the script never runs.
    """
    return f'dhcp-option=tag:!ipxe,option:root-path,"{root_path}"'


def no_root_path_fix() -> str:
    """How to make the DHCP server send the root path: the dnsmasq line ``generate dnsmasq`` writes."""
    return (
        f"add '{dnsmasq_root_path_line(EXAMPLE_ROOT_PATH)}' to the dnsmasq configuration "
        "(iscsiboot generate dnsmasq writes it), option root-path to ISC dhcpd's, "
        "or name the target on the command line"
    )


def dhcp_network(network: Network, shown: str, *, dhcp6: bool) -> Network:
    """The network of a line that takes the target from DHCP (``shown``: that token, redacted).

    Without ``ip=`` it is DHCP (DHCPv6 for ``dhcp6``); a static, switched-off
    or iBFT network has no lease to carry a root path and is refused.
    """
    wanted = NetMode.DHCP6 if dhcp6 else NetMode.DHCP
    if network.mode is NetMode.UNSET:
        return dataclasses.replace(network, mode=wanted)
    if network.mode is wanted or (not dhcp6 and network.mode is NetMode.DHCP6):
        return network
    raise ParseError(
        f"{shown} takes the target from the {'DHCPv6' if dhcp6 else 'DHCP'} server's root path, "
        f"but ip= says {network.mode.value}",
        where=shown,
        fix=f"write ip={wanted.value} (or leave ip= out), or name the target on the command line",
    )


def refuse_dracut_keys(keys: dict[str, tuple[str, str]]) -> None:
    """Refuse ``rd.iscsi.*`` target keys (credentials, group) beside a target from DHCP."""
    extra = [key for key in keys if key not in _TARGET_KEYS]
    if extra:
        raise ParseError(
            f"{', '.join(extra)} given with the target from the DHCP root path",
            where="the rd.iscsi.* keys",
            fix="put the credentials in the root path (iscsi:user:password@...), "
            "or name the target on the command line",
        )


def with_root_path(cfg: BootConfig, root_path: str | None) -> BootConfig:
    """``cfg`` (``target_from_dhcp``) with the target of the lease's ``root_path``.

    Raise :class:`~iscsiboot.errors.ParseError`: :data:`NO_ROOT_PATH` with
    :func:`no_root_path_fix` when there is none, the root path parser's error
    when it does not parse (quoted without its credentials).
    """
    text = (root_path or "").strip()
    if not text:
        raise ParseError(NO_ROOT_PATH, where="the DHCP lease", fix=no_root_path_fix())
    target = parse_root_path(text, where=f"the DHCP root path {redact_root_path(text)}")
    return dataclasses.replace(cfg, targets=(target,), target_from_dhcp=False)
