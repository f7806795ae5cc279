"""How the LUN reaches the kernel: kernel iSCSI (``iscsi_tcp``) or NBD served by the agent (pure).

``kernel``: the kernel's own initiator holds the session (the login backends of
:mod:`iscsiboot.agent.backends`).  ``nbd``: the project's initiator logs in
from user space and a resident daemon (:mod:`iscsiboot.agent.nbd`) serves the
LUN to the kernel's NBD client as ``/dev/nbdN``, for kernels without iSCSI
(stock LibreELEC).  ``auto`` (the default) takes kernel iSCSI when the running
kernel has it or the image carries its modules, else NBD.

Each transport's kernel modules live here, in one table: what PID 1 starts
loading first, what the login phase waits for, what the disk phase waits for.
The parameters a module is loaded with (nbd's) are the loader's
(:data:`iscsiboot.agent.phases.modules.MODULE_PARAMS`): its start-up child loads
the NIC drivers before this module (and ``dataclasses``) is imported.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Transport(enum.Enum):
    KERNEL = "kernel"
    NBD = "nbd"


CHOICES = ("auto", "kernel", "nbd")
# The kernel modules that make kernel iSCSI (and its firmware table view) work.
KERNEL_ISCSI_MODULES = ("iscsi_tcp", "libiscsi_tcp", "libiscsi", "scsi_transport_iscsi", "iscsi_ibft",
                        "iscsi_boot_sysfs")  # fmt: skip
# The file systems and loop for SYSTEM: both transports.  ext4 asks for the crc32c algorithm
# when it mounts a file system with metadata checksums (an alias: modules.dep does not say it);
# without it the mount fails with ENOENT where the kernel cannot load modules by itself.
FS_MODULES = ("squashfs", "loop", "ext4", "crypto-crc32c")


@dataclass(frozen=True)
class TransportModules:
    base: tuple[str, ...]  # what PID 1 starts loading before the configuration is read
    login: tuple[str, ...]  # what the login phase waits for
    disk: tuple[str, ...]  # what the disk phase waits for


# ``crypto-crc32c`` is an alias: iscsi_tcp asks for the crc32c algorithm at
# connection time, which modules.dep does not say.
MODULES: dict[Transport, TransportModules] = {
    Transport.KERNEL: TransportModules(
        base=("iscsi_tcp", "crypto-crc32c", "sd_mod", *FS_MODULES),
        login=("iscsi_tcp", "crypto-crc32c"),
        disk=("sd_mod",),
    ),
    Transport.NBD: TransportModules(base=("nbd", *FS_MODULES), login=("nbd",), disk=()),
}


def choose(wanted: str, *, kernel_has_iscsi: bool, image_has_iscsi: bool) -> Transport:
    """The transport to use for the option ``wanted`` (auto, kernel or nbd)."""
    if wanted == "auto":
        return Transport.KERNEL if kernel_has_iscsi or image_has_iscsi else Transport.NBD
    return Transport(wanted)
