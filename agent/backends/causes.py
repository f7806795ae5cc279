"""The cause of a failed login by the project's own initiator (pure): one classification for every backend.

The native backend (:mod:`.kernel`) and the NBD daemon (:mod:`iscsiboot.agent.nbd`)
both drive :class:`iscsiboot.iscsi.login.Login`; its errors, and the transport's,
become the same :class:`~iscsiboot.agent.backends.result.Cause` here.  Imports
no netlink or construct, so the NBD daemon stays small.
"""

from __future__ import annotations

import errno

from iscsiboot.agent.backends.result import Cause
from iscsiboot.iscsi.login import AuthenticationFailed, LoginFailed
from iscsiboot.iscsi.transport import TransportError


def cause_of_tcp(err: int | None) -> Cause:
    """The cause of a TCP connection that failed with ``err`` (None: no answer in time)."""
    if err == errno.ECONNREFUSED:
        return Cause.REFUSED
    if err in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL):
        return Cause.UNREACHABLE
    if err in (None, errno.ETIMEDOUT):
        return Cause.TIMEOUT
    return Cause.OTHER


def _os_error(exc: BaseException) -> OSError | None:
    """The OSError a transport error was raised from (kept as its context)."""
    context = exc.__cause__ or exc.__context__
    return context if isinstance(context, OSError) else None


def cause_of_login(exc: BaseException) -> Cause | None:
    """The cause of a login error common to every backend; None for one this does not know."""
    if isinstance(exc, LoginFailed):
        return Cause(exc.status.cause.value)  # target errors (offline, out of resources) are OTHER: retry
    if isinstance(exc, AuthenticationFailed):
        return Cause.AUTH
    if isinstance(exc, TransportError):
        origin = _os_error(exc)
        if isinstance(origin, TimeoutError) or (origin is None and "timed out" in exc.what):
            return Cause.TIMEOUT
        if origin is not None:
            return cause_of_tcp(origin.errno)
        return Cause.REFUSED  # the target closed the connection during the login
    if isinstance(exc, TimeoutError):
        return Cause.TIMEOUT
    return None
