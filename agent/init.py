# ruff: noqa: PLC0415, SIM105  (lazy imports on purpose, and no contextlib before the first fork)
"""PID 1 of the initramfs: mount the kernel file systems, run the phases, switch_root.

The image's ``/init`` (an overlay's ``/usr/lib/iscsiboot/init``) is a busybox
script that runs the image's own interpreter through the image's own loader
(:mod:`iscsiboot.agent.layout`) on a few lines that put the agent on sys.path
and call :func:`main`.  On failure the console shows one
paragraph (phase, cause, evidence, fix); then a debug shell when a console is
attached, else a reboot or power-off after ``iscsiboot.reboot_delay`` seconds
(``iscsiboot.on_failure=poweroff|reboot|shell`` chooses).
"""

from __future__ import annotations

import gc
import os
import stat
import sys
import time

# No typing at run time, and nothing but the standard library's lightest modules at the top
# of this module and of what PID 1 imports before it forks its start-up child (the NIC drivers):
# each import costs a slow guest tens of milliseconds (``python -X importtime`` under TCG).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import TextIO

    from iscsiboot.agent.netup import NetworkUp
    from iscsiboot.agent.options import AgentOptions, OnFailure
    from iscsiboot.agent.report import Reporter
    from iscsiboot.agent.runner import Agent
    from iscsiboot.agent.startup.early import Early

EARLY_MOUNTS: tuple[tuple[str, str, str, str], ...] = (
    ("proc", "/proc", "proc", "nosuid,nodev,noexec"),
    ("sysfs", "/sys", "sysfs", "nosuid,nodev,noexec"),
    ("devtmpfs", "/dev", "devtmpfs", "mode=0755,nosuid"),
    ("tmpfs", "/run", "tmpfs", "mode=0755,nosuid,nodev"),
)
SHELLS: tuple[str, ...] = ("/bin/sh", "/usr/bin/sh", "/bin/busybox", "/usr/bin/busybox")
RESOLV_CONF = "/etc/resolv.conf"


def early_mounts() -> None:
    from iscsiboot.agent import sysc

    for source, target, fstype, options in EARLY_MOUNTS:
        os.makedirs(target, exist_ok=True)
        if os.path.ismount(target):
            continue
        flags, data = sysc.split_options(options)
        try:
            sysc.mount(source, target, fstype, flags, data)
        except OSError as exc:
            if fstype == "devtmpfs":  # a kernel without devtmpfs: a tmpfs /dev and our own nodes
                sysc.mount("tmpfs", target, "tmpfs", flags, "mode=0755")
            else:
                sys.stderr.write(f"iscsiboot: cannot mount {target}: {exc}\n")
    for name, major, minor in (("console", 5, 1), ("null", 1, 3), ("kmsg", 1, 11)):
        path = f"/dev/{name}"
        if not os.path.exists(path):
            try:
                os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(major, minor))
            except OSError:
                pass


def open_console() -> TextIO:
    """Make /dev/console our stdin/stdout/stderr (the kernel may have given none)."""
    try:
        fd = os.open("/dev/console", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        return sys.stdout
    for target in (0, 1, 2):
        if fd != target:
            os.dup2(fd, target)
    if fd > 2:
        os.close(fd)
    console = os.fdopen(1, "w", buffering=1, closefd=False)
    sys.stdout = console
    sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
    return console


def read_cmdline(path: str = "/proc/cmdline") -> str:
    try:
        with open(path) as handle:
            return handle.read().strip()
    except OSError:
        return ""


def with_client_uid(text: str, *, sysfs: str = "/sys", cpuinfo: str = "/proc/cpuinfo") -> str:
    """``text`` with LibreELEC's ``@UID@`` in ``boot=``/``disk=`` replaced by this machine's id.

    The id (:mod:`iscsiboot.cmdline.uid`): the CPU serial, else the MAC of the
    first hardware Ethernet NIC (the boot NIC of a one-NIC HTPC).  Without
    either, ``text`` stays as it is and the unreplaced value fails where it is used.
    """
    if "@UID@" not in text:  # the usual line: nothing more is imported
        return text
    from iscsiboot.agent.startup.early import ethernet_links
    from iscsiboot.cmdline import uid
    from iscsiboot.errors import ParseError

    if not uid.has_placeholder(text):
        return text
    try:
        with open(cpuinfo) as handle:
            cpu = handle.read()
    except OSError:
        cpu = ""
    mac = None
    for name, _ in ethernet_links(sysfs)[:1]:
        try:
            with open(f"{sysfs}/class/net/{name}/address") as handle:
                mac = handle.read().strip()
        except OSError:
            pass
    try:
        return uid.substitute(text, uid.client_uid(cpu, mac))
    except ParseError:
        return text


def shell(reporter: Reporter, why: str) -> bool:
    """Run a debug shell on the console; False when there is none."""
    for path in SHELLS:
        if os.access(path, os.X_OK):
            argv = [path, "sh"] if path.endswith("busybox") else [path]
            reporter.line(f"{why}: starting a debug shell; type exit to continue")
            pid = os.fork()
            if pid == 0:
                try:
                    os.setsid()
                    os.execv(path, argv)
                finally:
                    os._exit(127)
            os.waitpid(pid, 0)
            return True
    reporter.line(f"{why}: no shell in the initramfs")
    return False


def console_attached() -> bool:
    try:
        return os.isatty(0)
    except OSError:
        return False


def fail_action(options: AgentOptions, reporter: Reporter) -> None:
    """What to do after a failure; never returns."""
    from iscsiboot.agent import sysc
    from iscsiboot.agent.options import OnFailure

    action = options.on_failure
    if action is None:
        action = OnFailure.SHELL if (console_attached() or options.debugging) else OnFailure.REBOOT
    if action is OnFailure.SHELL:
        shell(reporter, "boot failed")
        action = OnFailure.REBOOT
    verb = "powering off" if action is OnFailure.POWEROFF else "rebooting"
    if options.reboot_delay:
        reporter.line(f"{verb} in {options.reboot_delay:.0f} s")
        time.sleep(options.reboot_delay)
    try:
        sysc.reboot(sysc.RB_POWER_OFF if action is OnFailure.POWEROFF else sysc.RB_AUTOBOOT)
    except OSError as exc:
        reporter.line(f"{verb} failed: {exc}")
    while True:  # PID 1 must not exit
        time.sleep(3600)


def break_action(options: AgentOptions, reporter: Reporter, phase: str, run_shell: bool = True) -> bool:
    """At ``break=<phase>``: True to go on after a debug shell, False to stop the run there.

    As OpenELEC, a break opens a debug shell and the boot goes on when it
    exits.  With ``iscsiboot.on_failure=poweroff`` or ``reboot`` nobody is
    meant to type at the console, so the run stops before ``phase`` instead
    and the failure action follows (a shell would wait for ever).
    """
    from iscsiboot.agent.options import OnFailure

    if options.on_failure in (OnFailure.POWEROFF, OnFailure.REBOOT):
        action = options.on_failure.value
        reporter.line(f"break={phase}: stopping before the {phase} phase (iscsiboot.on_failure={action})")
        return False
    if run_shell:
        shell(reporter, f"break={phase}")
    return True


def main() -> None:
    """PID 1: never returns (switch_root execs the new init; failures reboot or power off)."""
    # PID 1 lives a few seconds and execs the real init: no cyclic garbage collection while
    # it imports (measured on the host: about 5 % of the import time; the boot's cycles are few and small).
    gc.disable()
    os.environ.setdefault("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    os.environ.setdefault("HOME", "/")
    kernel_console = False  # our console is the kernel's (it shows the kernel log)
    try:
        early_mounts()
        before = sys.stdout
        console = open_console()
        kernel_console = console is not before
    except Exception as exc:  # PID 1 must not die: the kernel would panic
        sys.stderr.write(f"iscsiboot: early set-up failed: {exc}\n")
        console = sys.stdout
    try:
        _main(console, kernel_console)
    except Exception:
        import traceback

        from iscsiboot.agent.options import AgentOptions
        from iscsiboot.agent.report import Reporter

        console.write("iscsiboot: internal error; the traceback follows\n")
        traceback.print_exc(file=console)
        reporter = Reporter(console)
        fail_action(AgentOptions(on_failure=_failure_choice()), reporter)


def _failure_choice() -> OnFailure | None:
    from iscsiboot.agent.options import parse_options

    try:
        return parse_options(read_cmdline()).on_failure
    except Exception:
        return None


def start_early(text: str) -> tuple[AgentOptions, Early | None, NetworkUp | None]:
    """Start the kernel work and imports that need no configuration; the options, the start-up, the network.

    The start-up child and the network worker are forked first, before any
    thread exists; the options (read between the two forks, once the imports
    both processes share are done) say whether the worker is wanted
    (``iscsiboot.worker=no``: the network comes up in PID 1; the iBFT's network,
    which brings its own address, needs no pyroute2 and no worker either).
    """
    options = None
    try:
        from iscsiboot.agent import sysc
        from iscsiboot.agent.phases.modules import Loader
        from iscsiboot.agent.startup.early import Early, preload_pid
        from iscsiboot.agent.startup.netproc import NetWorker

        preload = preload_pid()
        loader = Loader(f"/lib/modules/{os.uname().release}", sysc.finit_module)
        loader.index_now()  # the start-up child inherits the index
        worker = None
        try:
            worker = NetWorker.start_up(loader, preload=preload)
        except OSError as exc:  # no fork: the threads do the work
            sys.stderr.write(f"iscsiboot: start-up child not started: {exc}\n")
        shared_imports()
        options = read_options(text)
        # The iBFT's network (its address) needs no pyroute2: no worker importing it ahead of time.
        if worker is not None and options.network_worker and not options.network_from_firmware:
            try:
                worker.start_worker(dhcp=options.dhcp_expected)
            except OSError as exc:  # no fork: PID 1 brings the network up
                sys.stderr.write(f"iscsiboot: network worker not started: {exc}\n")
        from iscsiboot.agent.netup import choose

        dhcp = options.dhcp_expected

        def imports() -> None:
            from iscsiboot.agent.phases.network import prefetch

            prefetch(dhcp)

        in_process = (worker is None or not worker.running) and not options.network_from_firmware
        from iscsiboot.agent.transport import MODULES

        early = Early(
            loader,
            base_modules=MODULES[loader.transport(options.transport)].base,
            imports=imports if in_process else None,
            worker=worker,
            preload=preload,
        ).start()
        network = choose(options, worker=worker, imports=early.imports, resolv_conf=RESOLV_CONF)
        early.wait_ready(1.0)  # the loads overlap with what follows; reading the index does not
        return options, early, network
    except Exception as exc:  # the phases do the same work again and report
        sys.stderr.write(f"iscsiboot: start-up work not started: {exc}\n")
        return options or read_options(text), None, None


def read_options(text: str) -> AgentOptions:
    """The agent's options from the command line; the defaults (and a line saying why) when they are wrong."""
    from iscsiboot.agent.options import AgentOptions, parse_options
    from iscsiboot.errors import IscsibootError

    try:
        return parse_options(text)
    except IscsibootError as exc:
        sys.stdout.write(f"iscsiboot: bad option: {exc}; using the defaults\n")
        return AgentOptions()


def shared_imports() -> None:
    """What PID 1 and the network worker both need, imported once before the worker's fork.

    The dataclass code table, dataclasses (with inspect, ast and dis), typing,
    the model and plan, json: about half a second of a slow guest's CPU that
    the worker would otherwise spend a second time.
    """
    from iscsiboot.agent.startup import codecache

    codecache.install()
    import json  # noqa: F401

    import iscsiboot.agent.errors
    import iscsiboot.agent.plan  # noqa: F401


def _main(console: TextIO, kernel_console: bool = False) -> None:
    from iscsiboot.agent.startup.early import boottime

    started = boottime()
    text = read_cmdline()
    options, early, network = start_early(text)
    from iscsiboot.agent.startup import codecache

    cache = codecache.install()  # installed already by shared_imports unless start-up failed
    from iscsiboot.agent.report import Reporter, kernel_console_level

    # on the kernel's console, a line the kernel log shows there is written once, through the log
    level = kernel_console_level() if kernel_console else None
    reporter = Reporter(console, verbose=options.debugging, console_level=level)
    if options.cmdline_file:
        text = read_cmdline(options.cmdline_file) or text
    text = with_client_uid(text)
    from iscsiboot.agent.runner import Agent, Env

    agent = Agent(text, options, reporter, Env(resolv_conf=RESOLV_CONF), early=early, network_up=network)

    def on_break(phase: str) -> bool:
        return break_action(options, reporter, phase)

    result = agent.run(on_break=on_break)
    if cache is not None:
        reporter.debug(f"dataclass code: {cache.hits} precompiled, {cache.misses} compiled at boot")
    result.clock = clock_marks(started, early)
    reporter.finish(result)
    if not result.ok:
        fail_action(options, reporter)
    switch(agent, reporter, options)


def clock_marks(started: float, early: Early | None) -> dict[str, float | None]:
    """Kernel uptime (s) at: the agent's first step, its first netlink call, the result.

    Also ``peak_rss_mib``: PID 1's peak resident memory, and ``worker_peak_rss_mib``: the
    network worker's (they run at the same time; other children are not counted).
    """
    from iscsiboot.agent.startup.early import boottime, peak_rss_kib

    rss = peak_rss_kib()
    worker = getattr(early, "worker", None)
    worker_rss = getattr(worker, "peak_rss_kib", None)
    return {
        "agent_start": round(started, 3),
        "first_netlink": round(early.first_netlink, 3) if early and early.first_netlink else None,
        "result": round(boottime(), 3),
        "peak_rss_mib": round(rss / 1024, 1) if rss else None,
        "worker_peak_rss_mib": round(worker_rss / 1024, 1) if worker_rss else None,
    }


def switch(agent: Agent, reporter: Reporter, options: AgentOptions) -> None:
    from iscsiboot.agent import sysc
    from iscsiboot.agent.errors import PhaseError
    from iscsiboot.agent.phases.handoff import mounted_points, move_mounts

    handoff = agent.results.handoff
    assert handoff is not None  # the run ended with the handoff phase
    init = handoff.init
    try:
        move_mounts(options.sysroot, mounted_points(), reporter.debug)
        reporter.line(f"switching to {options.sysroot} ({init})")
        sysc.switch_root(options.sysroot, init)
    except (PhaseError, OSError) as exc:
        import contextlib

        agent.cleanup()  # mounts still where they were
        for path in (os.path.join(options.sysroot, "storage"), os.path.join(options.sysroot, "flash")):
            # mounts already moved under the new root: never leave Storage read-write
            with contextlib.suppress(OSError):
                sysc.umount(path, sysc.MNT_DETACH)
        result = agent.result
        assert result is not None
        result.ok = False
        result.phase = "handoff"
        result.error = f"switch_root failed: {exc}"
        reporter.report_path = None
        reporter.finish(result)
        fail_action(options, reporter)


if __name__ == "__main__":
    main()
