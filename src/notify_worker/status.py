"""The five job statuses and the transitions allowed between them."""

from __future__ import annotations

from enum import StrEnum


class UnknownStatus(ValueError):
    """A word that is not one of the five statuses."""

    def __init__(self, word: str) -> None:
        choices = ", ".join(status.value for status in JobStatus)
        super().__init__(f"unknown status {word!r}: expected one of {choices}")
        self.word = word


class JobStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @classmethod
    def parse(cls, word: str) -> JobStatus:
        """Return the status spelled exactly `word`; reject anything else."""
        try:
            return cls(word)
        except ValueError:
            raise UnknownStatus(word) from None

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({JobStatus.SUCCESS, JobStatus.FAILED, JobStatus.CANCELLED})

# Who may move a job where; see the state machine in DESIGN.md.
TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.PENDING: frozenset({JobStatus.RUNNING, JobStatus.CANCELLED}),
    JobStatus.RUNNING: frozenset(
        {JobStatus.SUCCESS, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.PENDING}
    ),
    JobStatus.SUCCESS: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}


def sources_of(target: JobStatus) -> frozenset[JobStatus]:
    """The statuses from which a job may move to `target`."""
    return frozenset(
        source for source, targets in TRANSITIONS.items() if target in targets
    )


def can_transition(source: JobStatus, target: JobStatus) -> bool:
    return target in TRANSITIONS[source]
