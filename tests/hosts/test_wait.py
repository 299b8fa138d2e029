"""The deadline-polling wait every Python test uses (harness/wait.py); no lab needed.

Run:
    python3 -m pytest -q -p no:cacheprovider tests/hosts/test_wait.py
"""

import time

import pytest

import harness


def test_returns_the_observation_that_was_done():
    calls = []
    seen = harness.wait_for("the third call", lambda: calls.append(1) or len(calls),
                            lambda count: count == 3, timeout_s=10, interval_s=0.001)
    assert seen == 3


def test_a_timeout_names_what_and_the_last_observation():
    with pytest.raises(harness.TimedOut) as raised:
        harness.wait_for("the job to end", lambda: {"state": "running"},
                         lambda job: job["state"] != "running", timeout_s=0.05,
                         interval_s=0.001)
    message = str(raised.value)
    assert "waiting for the job to end" in message, message
    assert "'state': 'running'" in message, message
    assert isinstance(raised.value, AssertionError)


def test_poll_observes_once_more_at_the_deadline():
    started = time.monotonic()
    # The interval is longer than the timeout: the second observation is at the deadline.
    seen, done = harness.poll(lambda: time.monotonic() - started, lambda waited: waited >= 0.05,
                              timeout_s=0.05, interval_s=10)
    assert done, seen
