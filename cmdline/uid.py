"""LibreELEC's ``@UID@`` placeholder: one boot loader configuration for several HTPCs.

LibreELEC's init replaces ``@UID@`` in the values of ``boot=`` and ``disk=``
with an id of the machine, so that one ``syslinux.cfg`` (or one DHCP/TFTP
set-up) serves every HTPC while each finds its own disk, e.g.
``disk=LABEL=Storage-@UID@`` or an initiator name ending in ``:@UID@``.
The id is the serial number from ``/proc/cpuinfo`` where the CPU has one
(ARM boards; a serial of zeros counts as none), else the boot NIC's MAC
address in lower-case hex without colons.

Which values, and which id, follow LibreELEC's ``init``
(``packages/sysutils/busybox/scripts/init``): ``mount_part`` replaces
``@UID@`` in the value it mounts, and it mounts only the ``boot=`` and
``disk=`` values; ``MACHINE_UID`` is the last 8 characters of the
``Serial`` field (``substr(s, length(s) - 7)``), else the MAC of ``eth0``
without colons.  So a Raspberry Pi whose serial is ``10000000a1b2c3d4`` is
``a1b2c3d4`` there and here.  (LibreELEC takes a serial of zeros as it is;
here it counts as none, since every such board would share it.)

Where the generators put ``@UID@`` (:mod:`iscsiboot.cmdline.generate`): kept
on kernel command lines, in ``boot=``/``disk=`` values only; iPXE's own
``${netX/mac:hexraw}`` in iPXE scripts; the client's MAC id with a clients
file; refused anywhere else.

Pure: :func:`client_uid` takes the text of ``/proc/cpuinfo`` and a MAC, and
:func:`substitute` a command line; reading them is the caller's.
"""

from __future__ import annotations

import re

from iscsiboot.errors import ParseError

PLACEHOLDER = "@UID@"
_SUBSTITUTED = ("boot=", "disk=")  # LibreELEC replaces it in these values only
SERIAL_DIGITS = 8  # LibreELEC's MACHINE_UID keeps the serial's last 8 characters
#: The longest id (a MAC's 12 hex digits): what checks of length and characters put in its place.
LONGEST = 12
_SERIAL = re.compile(r"^Serial\s*:\s*([0-9A-Fa-f]+)\s*$", re.M)
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def cpu_serial(cpuinfo: str) -> str | None:
    """The ``Serial`` of ``/proc/cpuinfo`` (lower case), or None when it is missing or all zeros."""
    found = _SERIAL.search(cpuinfo)
    if found is None or not found.group(1).strip("0"):
        return None
    return found.group(1).lower()


def client_uid(cpuinfo: str, mac: str | None) -> str:
    """The machine's id: the last 8 digits of its CPU serial (LibreELEC's), else ``mac`` without colons."""
    serial = cpu_serial(cpuinfo)
    if serial is not None:
        return serial.rjust(SERIAL_DIGITS, "0")[-SERIAL_DIGITS:]
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
