"""One classification of login errors for every backend of the project's initiator."""

from __future__ import annotations

import errno

import pytest
from iscsiboot.agent.backends import kernel as native
from iscsiboot.agent.backends.causes import cause_of_login
from iscsiboot.agent.backends.result import Cause
from iscsiboot.iscsi.login import AuthenticationFailed, LoginFailed
from iscsiboot.iscsi.transport import PortalUnreachable, TransportError


def raised_from(origin: OSError, error: TransportError) -> TransportError:
    """``error`` as the transport raises it: ``from None``, the OSError kept as its context."""
    try:
        try:
            raise origin
        except OSError:
            raise error from None
    except TransportError as exc:
        return exc


@pytest.mark.parametrize(
    ("exc", "cause"),
    [
        (LoginFailed(0x02, 0x01), Cause.AUTH),
        (LoginFailed(0x02, 0x03), Cause.NOT_FOUND),
        (AuthenticationFailed("mutual CHAP proof wrong"), Cause.AUTH),
        (
            raised_from(ConnectionRefusedError(errno.ECONNREFUSED, "refused"), PortalUnreachable("x")),
            Cause.REFUSED,
        ),
        (raised_from(OSError(errno.EHOSTUNREACH, "no route"), PortalUnreachable("x")), Cause.UNREACHABLE),
        (raised_from(TimeoutError("timed out"), PortalUnreachable("x")), Cause.TIMEOUT),
        (TransportError("timed out waiting for 10.0.0.1:3260"), Cause.TIMEOUT),
        (TransportError("10.0.0.1:3260 closed the connection"), Cause.REFUSED),
        (TimeoutError(), Cause.TIMEOUT),
    ],
)
def test_cause_of_login(exc: BaseException, cause: Cause) -> None:
    assert cause_of_login(exc) is cause
    assert native.cause_of_error(exc) is cause  # the kernel path says the same


def test_an_error_it_does_not_know_is_left_to_the_backend() -> None:
    assert cause_of_login(ValueError("x")) is None
    assert native.cause_of_error(ValueError("x")) is Cause.OTHER
