"""Kernel modules: finit_module(2) loading by name or alias, with the indexes of :mod:`iscsiboot.agent.kmod`.

The NIC driver is found by matching the modalias of network-class PCI devices
(and, once virtio_pci is in, virtio network devices) against modules.alias.
``iscsi_tcp`` needs the ``crc32c`` crypto algorithm at connection time, which
modules.dep does not express: the plan asks for the ``crypto-crc32c`` alias.
"""

from __future__ import annotations

import _thread
import errno
import os

from iscsiboot.agent.errors import PhaseError
from iscsiboot.agent.kmod import BinIndex, ModuleIndex, read_index

# An overlay's own module index (``<release>/modules.dep`` ...): the base's stays in place.
OVERLAY_INDEX = "/usr/lib/iscsiboot/modules"
# nbd's parameters where it is a module: a few devices, and partitions on them (sda-like nbd0p1)
NBD_PARAMS = "nbds_max=4 max_part=15"
MODULE_PARAMS: dict[str, str] = {"nbd": NBD_PARAMS}  # what a module is loaded with (none: "")
# Network devices: PCI class 02xxxx, and virtio device id 1 (the image's nic-preload script matches the same).
NIC_PCI_CLASS = "0x02"
NIC_VIRTIO_ALIAS = "virtio:d00000001v"
# The pid of the image's NIC preload job (``/init`` starts it before the interpreter), in PID 1's environment.
PRELOAD_ENV = "ISCSIBOOT_NIC_PRELOAD"

# PID 1 imports this module before it forks its start-up child, which loads the NIC
# drivers with it, so it stays light: plain classes instead of dataclasses
# (``dataclasses`` pulls in ``inspect``, about 0.1 s in a slow guest), no ``typing``,
# ``pathlib`` or ``threading`` at run time (the loader's locks are ``_thread``'s), and
# the transport table only where a method needs it.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import threading
    from collections.abc import Callable, Iterator

    from iscsiboot.agent.deadline import Deadline
    from iscsiboot.agent.transport import Transport


def _entries(folder: str) -> list[str]:
    """The entries of ``folder`` as paths, sorted; none when it cannot be read."""
    try:
        return [os.path.join(folder, name) for name in sorted(os.listdir(folder))]
    except OSError:
        return []


def _read(path: str) -> str:
    with open(path) as handle:
        return handle.read()


def nic_modaliases(sysfs: str = "/sys") -> list[str]:
    """Modaliases of network devices: PCI class 02xxxx, and virtio device id 1."""
    found: list[str] = []
    for dev in _entries(f"{sysfs}/bus/pci/devices"):
        try:
            klass = _read(f"{dev}/class").strip()
            if klass.startswith(NIC_PCI_CLASS):
                found.append(_read(f"{dev}/modalias").strip())
        except OSError:
            continue
    for dev in _entries(f"{sysfs}/bus/virtio/devices"):
        try:
            alias = _read(f"{dev}/modalias").strip()
        except OSError:
            continue
        if alias.startswith(NIC_VIRTIO_ALIAS):
            found.append(alias)
    return found


def driverless_nics(sysfs: str = "/sys") -> list[str]:
    """Network-class PCI devices no driver has claimed, as ``0000:00:03.0 (10ec:8139)``."""
    found: list[str] = []
    for dev in _entries(f"{sysfs}/bus/pci/devices"):
        try:
            if not _read(f"{dev}/class").startswith(NIC_PCI_CLASS) or os.path.exists(f"{dev}/driver"):
                continue
            ids = [_read(f"{dev}/{name}").strip().removeprefix("0x") for name in ("vendor", "device")]
        except OSError:
            continue
        found.append(f"{os.path.basename(dev)} ({':'.join(ids)})")
    return found


def crypto_has(algorithm: str, proc_crypto: str = "/proc/crypto") -> bool:
    try:
        text = _read(proc_crypto)
    except OSError:
        return False
    return any(
        line.split(":", 1)[1].strip() == algorithm for line in text.splitlines() if line.startswith("name")
    )


if TYPE_CHECKING:
    Load = Callable[[str, str], None]  # (path, parameters): sysc.finit_module


class Loader:
    """Loads modules with their dependencies from ``moddir`` (``/lib/modules/$(uname -r)``).

    The module files are always in ``moddir``.  An overlay appended to a
    distribution initramfs keeps its own index in ``OVERLAY_INDEX/<release>``
    and leaves the base's index in ``moddir`` alone (the base's udev and
    modprobe still need it): names and aliases are looked up in the overlay's
    index first, and the base's is read only when that has no answer.  A
    folder's index is depmod's trie files where they exist (a distribution's
    26,000 aliases are not parsed, :class:`BinIndex`), else its text.
    """

    def __init__(
        self,
        moddir: str,
        load: Load,
        *,
        sysfs: str = "/sys",
        proc: str = "/proc",
        index: ModuleIndex | BinIndex | None = None,
        overlay_index: str | None = None,
    ) -> None:
        self.moddir = moddir
        self.load = load
        self.sysfs = sysfs
        self.proc = proc
        release = os.path.basename(moddir.rstrip("/"))
        own = overlay_index if overlay_index is not None else f"{OVERLAY_INDEX}/{release}"
        self.index_dirs: tuple[str, ...] = (own, moddir) if index is None and own != moddir else (moddir,)
        self.indexes: list[ModuleIndex | BinIndex | None] = [index] if index is not None else []
        self.loaded: list[str] = []
        self.lock = _thread.allocate_lock()  # guards loaded and the per-module locks
        self.index_lock = _thread.allocate_lock()
        self.module_locks: dict[str, _thread.LockType] = {}

    def _module_lock(self, name: str) -> _thread.LockType:
        """One lock per module: threads loading different modules do not wait for each other."""
        with self.lock:
            return self.module_locks.setdefault(name, _thread.allocate_lock())

    def index_now(self) -> None:
        """Read the first index there is now (PID 1 does it before it loads anything)."""
        if self.modular():
            next(self._each_index(), None)

    def _each_index(self) -> Iterator[ModuleIndex | BinIndex]:
        """The indexes that exist, in order of preference, each read when first reached."""
        found = False
        for position, folder in enumerate(self.index_dirs):
            with self.index_lock:  # PID 1's start-up thread and the phases share one loader
                if len(self.indexes) == position:
                    self.indexes.append(read_index(folder))
                index = self.indexes[position]
            if index is not None:
                found = True
                yield index
        if not found:
            raise PhaseError(
                "modules",
                f"no modules.dep in {self.moddir}",
                cause="missing-module",
                fix="build the initramfs with the kernel's modules and run depmod -b",
            )

    def _lookup(self, wanted: str) -> tuple[ModuleIndex | BinIndex | None, list[str]]:
        """The first index that knows ``wanted``, and its candidates."""
        for index in self._each_index():
            candidates = index.lookup(wanted)
            if candidates:
                return index, candidates
        return None, []

    def knows(self, wanted: str) -> bool:
        """Whether the kernel has ``wanted`` built in, or an index of the image has it as a module."""
        try:
            index, _candidates = self._lookup(wanted)
        except PhaseError:
            return False
        return index is not None

    def transport(self, wanted: str) -> Transport:
        """The transport for the option ``wanted``: ``auto`` takes kernel iSCSI where there is one."""
        from iscsiboot.agent.transport import choose  # noqa: PLC0415  (dataclasses: after the fork)

        if wanted != "auto":
            return choose(wanted, kernel_has_iscsi=False, image_has_iscsi=False)
        return choose(
            wanted,
            kernel_has_iscsi=any(
                os.path.exists(f"{self.sysfs}/{path}")
                for path in ("module/iscsi_tcp", "class/iscsi_transport/tcp")
            ),
            image_has_iscsi=self.modular() and self.knows("iscsi_tcp"),
        )

    def is_loaded(self, name: str) -> bool:
        return os.path.exists(f"{self.sysfs}/module/{name}")

    def modular(self) -> bool:
        """False for a kernel without module support (everything it has is built in)."""
        return os.path.exists(f"{self.proc}/modules")

    def ensure(self, wanted: str) -> list[str]:
        """Load ``wanted`` (a name or an alias) with its dependencies; return what was loaded."""
        if wanted == "crypto-crc32c" and crypto_has("crc32c", f"{self.proc}/crypto"):
            return []
        if not self.modular():
            return []
        index, candidates = self._lookup(wanted)
        if index is None:
            raise PhaseError(
                "modules",
                f"kernel module {wanted!r} is not in {self.moddir}",
                cause="missing-module",
                evidence=f"no {wanted} in modules.dep, modules.alias or modules.builtin",
                fix=f"add {wanted} to the initramfs (or build it into the kernel)",
            )
        problems: list[str] = []
        for candidate in candidates:
            try:
                return self._load_with_deps(index, candidate)
            except OSError as exc:
                problems.append(f"{candidate}: {exc.strerror or exc}")
        raise PhaseError(
            "modules",
            f"cannot load kernel module {wanted!r}",
            cause="module-load",
            evidence="; ".join(problems),
            fix="check that the initramfs modules match the running kernel (uname -r)",
        )

    def _load_with_deps(self, index: ModuleIndex | BinIndex, name: str) -> list[str]:
        done: list[str] = []
        for module in index.load_order(name):
            if module in index.builtin or self.is_loaded(module):
                continue
            path = index.path(module)
            if path is None:
                raise OSError(2, f"{module} is not in modules.dep")
            with self._module_lock(module):
                if self.is_loaded(module):  # another thread got there first
                    continue
                try:
                    self.load(os.path.join(self.moddir, path), MODULE_PARAMS.get(module, ""))
                except OSError as exc:
                    if exc.errno != errno.EEXIST:  # loaded meanwhile (udev, the kernel itself)
                        raise
                with self.lock:
                    self.loaded.append(module)
            done.append(module)
        return done

    def nic_drivers(self) -> list[str]:
        """Modules matching the network devices present now."""
        drivers: list[str] = []
        for alias in nic_modaliases(self.sysfs):
            for module in self._lookup(alias)[1]:
                if module not in drivers:
                    drivers.append(module)
        return drivers

    def load_nic_drivers(self, deadline: Deadline, *, preloaded: bool = False) -> list[str]:
        """Load NIC drivers; a bus driver (virtio_pci) may reveal the real NIC, so repeat.

        ``preloaded``: ``/init`` has loaded drivers already; those of the NICs present count too.
        """
        loaded: list[str] = []
        if not self.modular():
            return loaded
        for round_ in range(3):
            drivers = self.nic_drivers()
            if preloaded and not round_:
                loaded = [d for d in drivers if self.is_loaded(d)]
            new = [d for d in drivers if d not in loaded and not self.is_loaded(d)]
            if not new or deadline.expired():
                break
            for driver in new:
                try:
                    self.ensure(driver)
                except PhaseError:
                    continue  # a bus may match several drivers; the network phase reports a missing NIC
                loaded.append(driver)
        return loaded


class Background:
    """Loads a list of modules in a thread while the network comes up."""

    def __init__(
        self, loader: Loader, names: tuple[str, ...], *, after: threading.Thread | None = None
    ) -> None:
        self.loader = loader
        self.names = names
        self.after = after  # the start-up thread already loading most of them
        import threading  # noqa: PLC0415  (PID 1 starts threads only after its first fork)

        self.error: PhaseError | None = None
        self.thread = threading.Thread(target=self._run, name="modules", daemon=True)

    def start(self) -> Background:
        self.thread.start()
        return self

    def _run(self) -> None:
        if self.after is not None:
            self.after.join()
        for name in self.names:
            try:
                self._load(name)
            except PhaseError as exc:
                self.error = exc
                return

    def _load(self, name: str) -> None:
        try:
            self.loader.ensure(name)
        except PhaseError:
            raise
        except Exception as exc:
            raise PhaseError("modules", f"loading {name} failed: {exc}", cause="module-load") from None

    def ensure_now(self, names: tuple[str, ...], deadline: Deadline) -> None:
        """Load ``names`` in this thread now (each is waited for if another thread has it under way).

        A phase waits only for what it needs: the login for iscsi_tcp while
        ext4, the largest, may still be loading behind it.
        """
        for name in names:
            if deadline.expired():
                raise _still_loading(name)
            self._load(name)

    def wait(self, deadline: Deadline) -> None:
        """Wait until every module of the list is loaded."""
        self.thread.join(deadline.remaining())
        if self.thread.is_alive():
            raise _still_loading(", ".join(self.names))
        if self.error is not None:
            raise self.error


def _still_loading(names: str) -> PhaseError:
    return PhaseError(
        "modules",
        "kernel modules still loading at the deadline",
        cause="timeout",
        evidence=f"waiting for {names}",
        fix="raise iscsiboot.timeout.login",
    )
