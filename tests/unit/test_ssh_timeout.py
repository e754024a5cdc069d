"""A command that invoke's timer ended is reported as timed out even when `run` returned before
the timer's thread did (then invoke gives back a result with no exit status instead of raising
CommandTimedOut): seen in a loaded `make test`, where `sleep 30` with a 2 s timeout came back
as "exited with -1"."""

from harness.ssh import killed_by_timeout


def test_no_exit_status_at_the_deadline_is_a_timeout():
    assert killed_by_timeout(-1, 2.0, 2.0)
    assert killed_by_timeout(-1, 2.3, 2.0)


def test_no_exit_status_before_the_deadline_is_not_a_timeout():
    # The channel closed early (sshd or the guest went away): that is another fault.
    assert not killed_by_timeout(-1, 1.9, 2.0)


def test_a_real_exit_status_is_never_a_timeout():
    assert not killed_by_timeout(0, 5.0, 2.0)
    assert not killed_by_timeout(1, 5.0, 2.0)
    assert not killed_by_timeout(255, 5.0, 2.0)
