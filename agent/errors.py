"""The agent's failure: which phase, what cause, the evidence, and the fix."""

from __future__ import annotations

from iscsiboot.errors import BootFailure


class PhaseError(BootFailure):
    """A phase could not reach its goal.

    ``cause`` is a short machine-readable word (``auth``, ``not-found``,
    ``timeout``, ``refused``, ``missing-module``, ``ambiguous`` ...);
    ``evidence`` is what was seen (a tool's error line, a sysfs path).
    Nothing here may hold a secret: callers mask tool output first.
    """

    def __init__(
        self,
        phase: str,
        what: str,
        *,
        cause: str = "other",
        evidence: str | None = None,
        fix: str | None = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(what, where=phase, fix=fix)
        self.phase = phase
        self.cause = cause
        self.evidence = evidence
        self.retryable = retryable

    def paragraph(self) -> str:
        """One short paragraph for the console: phase, cause, evidence, fix."""
        return failure_text(self.phase, self.what, self.evidence, self.fix)


def failure_text(phase: str, what: str | None, evidence: str | None, fix: str | None) -> str:
    """The console's paragraph for a failed phase: what failed, what was seen, the fix."""
    text = f"iSCSI boot failed in the {phase} phase: {what}."
    if evidence:
        text += f" Seen: {evidence}."
    if fix:
        text += f" Fix: {fix}."
    return text
