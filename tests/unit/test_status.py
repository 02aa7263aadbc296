import pytest

from notify_worker.status import (
    TERMINAL,
    JobStatus,
    UnknownStatus,
    can_transition,
    sources_of,
)


@pytest.mark.parametrize(
    "word", ["pending", "running", "success", "failed", "cancelled"]
)
def test_every_status_word_round_trips(word: str) -> None:
    status = JobStatus.parse(word)
    assert str(status) == word
    assert status.value == word


@pytest.mark.parametrize("word", ["Pending", "done", "", " success", "canceled"])
def test_an_unknown_word_is_rejected_not_guessed(word: str) -> None:
    with pytest.raises(UnknownStatus) as caught:
        JobStatus.parse(word)
    assert repr(word) in str(caught.value)


def test_terminal_statuses_go_nowhere() -> None:
    for status in TERMINAL:
        assert status.is_terminal
        for target in JobStatus:
            assert not can_transition(status, target)


def test_the_state_machine_of_the_design() -> None:
    assert sources_of(JobStatus.RUNNING) == {JobStatus.PENDING}
    assert sources_of(JobStatus.CANCELLED) == {JobStatus.PENDING, JobStatus.RUNNING}
    assert sources_of(JobStatus.SUCCESS) == {JobStatus.RUNNING}
    assert sources_of(JobStatus.PENDING) == {JobStatus.RUNNING}
