"""One meaning for each iSCSI login status: the initiator, the doctor and the agent agree."""

from __future__ import annotations

import pytest
from iscsiboot.agent.backends import kernel as native
from iscsiboot.agent.backends.result import Cause
from iscsiboot.doctor.checks import login_cause
from iscsiboot.iscsi.login import LoginFailed
from iscsiboot.iscsi.status import STATUS, Code, StatusCause, status_of
from iscsiboot.model import Chap, Target
from iscsiboot.secret import Secret

TARGET = Target("iqn.2026-11.org.iscsiboot:htpc", "192.0.2.14", chap=Chap("htpc", Secret("htpc-secret-12")))
ME = "iqn.2026-11.org.iscsiboot:client"
FAILURES = [*sorted(key for key in STATUS if key[0] >= 2), (2, 0x42), (3, 0x17), (9, 9)]


def test_every_status_cause_is_an_agent_cause() -> None:
    assert {c.value for c in StatusCause} <= {c.value for c in Cause}


@pytest.mark.parametrize(("klass", "detail"), FAILURES)
def test_initiator_doctor_and_agent_agree(klass: int, detail: int) -> None:
    status = status_of(klass, detail)
    exc = LoginFailed(klass, detail, target=TARGET.name)
    assert exc.status == status and exc.status_name == status.name
    assert f"{status.name} ({status.hex})" in exc.what
    assert native.cause_of_error(exc).value == status.cause.value
    text, _fix = login_cause(exc, TARGET, ME)
    if status.code is not Code.NOT_FOUND:
        assert text.startswith(f"the target answered: {status.name}"), text


def test_0x0202_is_authorization_everywhere() -> None:
    exc = LoginFailed(2, 2)
    assert exc.status.code is Code.AUTHORIZATION_FAILURE
    assert "authorization failure" in exc.what and "ACL" in exc.what
    assert native.cause_of_error(exc) is Cause.REJECTED  # the ACL, not the CHAP account
    text, fix = login_cause(exc, TARGET, ME)
    assert "authorization failure" in text and "ACL" in text and fix is not None and ME in fix
    assert "authentication" not in text


def test_0x0201_is_authentication_everywhere() -> None:
    exc = LoginFailed(2, 1)
    assert native.cause_of_error(exc) is Cause.AUTH
    text, _ = login_cause(exc, TARGET, ME)
    assert "authentication failure with CHAP user 'htpc'" in text and "htpc-secret-12" not in text
