"""What each phase hands to the phases after it: one frozen, typed result per phase.

The boot reads as data flowing through the phases (see the table in
:mod:`iscsiboot.agent.runner`)::

    config  -> ConfigResult   the merged boot model and the parser's warnings
    modules -> ModulesResult  the NIC drivers loaded, the modules still loading in the background
    network -> NetworkResult  the interface, address, gateway and DNS servers set up
    login   -> LoginsResult   the backend and each target's login
    disk    -> DiskResult     the sessions' disks, ready, and the sessions
    label   -> LabelResult    the System and Storage file systems
    mount   -> MountResult    the mounts made (and the mounter that undoes them)
    handoff -> HandoffResult  the init of the new root

:class:`Results` holds those of a run so far.  The types the results carry
are imported for the type checker only: this module costs PID 1 nothing but
its own classes.
"""

from __future__ import annotations

from dataclasses import dataclass

TYPE_CHECKING = False
if TYPE_CHECKING:
    from iscsiboot.agent.backends.nbd import NbdDisk
    from iscsiboot.agent.backends.result import LoginResult
    from iscsiboot.agent.keeper.config import KeptSession
    from iscsiboot.agent.phases.disk import ReadyDisk
    from iscsiboot.agent.phases.label import Candidate
    from iscsiboot.agent.phases.modules import Background
    from iscsiboot.agent.phases.mount import Mounter
    from iscsiboot.agent.plan import NetResult
    from iscsiboot.agent.report import SessionInfo
    from iscsiboot.model import BootConfig, Target


@dataclass(frozen=True)
class ConfigResult:
    config: BootConfig
    warnings: tuple[str, ...] = ()
    ibft: str | None = None  # where the iBFT was read, when the configuration uses it


@dataclass(frozen=True)
class ModulesResult:
    nics: tuple[str, ...] = ()  # NIC drivers loaded
    background: Background | None = None  # the rest, loading while the network comes up


@dataclass(frozen=True)
class NetworkResult:
    net: NetResult


@dataclass(frozen=True)
class LoginsResult:
    backend: str  # native, iscsistart or nbd
    logins: tuple[tuple[Target | None, LoginResult], ...]  # None: the iBFT's targets (iscsistart -b)
    nbd: tuple[NbdDisk, ...] = ()  # the NBD transport: the devices its daemons serve
    kept: tuple[KeptSession, ...] = ()  # the native backend's kernel sessions, for the keeper

    def targets(self) -> frozenset[str]:
        """The names of the targets logged in to."""
        return frozenset(target.name for target, _result in self.logins if target is not None)


@dataclass(frozen=True)
class DiskResult:
    disks: tuple[ReadyDisk, ...]
    sessions: tuple[SessionInfo, ...]


@dataclass(frozen=True)
class LabelResult:
    system: Candidate
    storage: Candidate | None


@dataclass(frozen=True)
class MountResult:
    mounts: tuple[tuple[str, str, bool], ...]  # (mount point, source, read-write)
    mounter: Mounter  # undoes them when a later step fails


@dataclass(frozen=True)
class HandoffResult:
    init: str  # the new root's init, for switch_root


@dataclass(frozen=True)
class Results:
    """The results of the phases run so far (None: that phase has not finished)."""

    config: ConfigResult | None = None
    modules: ModulesResult | None = None
    network: NetworkResult | None = None
    login: LoginsResult | None = None
    disk: DiskResult | None = None
    label: LabelResult | None = None
    mount: MountResult | None = None
    handoff: HandoffResult | None = None
