"""LibreELEC's ``@UID@`` placeholder: one boot loader configuration for several HTPCs.

LibreELEC's init replaces ``@UID@`` in the values of ``boot=`` and ``disk=``
with an id of the machine, so that one ``syslinux.cfg`` (or one DHCP/TFTP
set-up) serves every HTPC while each finds its own disk, e.g.
``disk=LABEL=Storage-@UID@`` or an initiator name ending in ``:@UID@``.
The id is the serial number from ``/proc/cpuinfo`` where the CPU has one
(ARM boards; a serial of zeros counts as none), else the boot NIC's MAC
address in lower-case hex without colons.

Pure: :func:`client_uid` takes the text of ``/proc/cpuinfo`` and a MAC, and
:func:`substitute` a command line; reading them is the caller's.
"""

from __future__ import annotations

import re

from iscsiboot.errors import ParseError

PLACEHOLDER = "@UID@"
_SUBSTITUTED = ("boot=", "disk=")  # LibreELEC replaces it in these values only
_SERIAL = re.compile(r"^Serial\s*:\s*([0-9A-Fa-f]+)\s*$", re.M)
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def cpu_serial(cpuinfo: str) -> str | None:
    """The ``Serial`` of ``/proc/cpuinfo`` (lower case), or None when it is missing or all zeros."""
    found = _SERIAL.search(cpuinfo)
    if found is None or not found.group(1).strip("0"):
        return None
    return found.group(1).lower()


def client_uid(cpuinfo: str, mac: str | None) -> str:
    """The machine's id: its CPU serial, else ``mac`` without colons."""
    serial = cpu_serial(cpuinfo)
    if serial is not None:
        return serial
    if mac is None or not _MAC.match(mac.lower()):
        raise ParseError(
            f"{PLACEHOLDER} needs the CPU's serial number or the boot NIC's MAC, and there is neither",
            where="boot=/disk=",
            fix=f"write the value without {PLACEHOLDER}",
        )
    return mac.lower().replace(":", "")


def has_placeholder(cmdline: str) -> bool:
    return any(word.startswith(_SUBSTITUTED) and PLACEHOLDER in word for word in cmdline.split())


def substitute(cmdline: str, uid: str) -> str:
    """``cmdline`` with ``@UID@`` replaced by ``uid`` in the ``boot=`` and ``disk=`` values.

    Words are kept as they are (white space between them included); other
    options are left alone, as LibreELEC's init does.
    """
    if not re.fullmatch(r"[0-9a-z]+", uid):
        raise ParseError(f"client id {uid!r} is not lower-case letters and digits", where=PLACEHOLDER)
    return re.sub(
        r"(?<!\S)((?:boot|disk)=\S*)",
        lambda found: found.group(1).replace(PLACEHOLDER, uid),
        cmdline,
    )
