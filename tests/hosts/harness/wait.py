"""The one way the Python tests wait (tests/hosts, tests/e2e, tests/upgrade): observe until a
condition holds or a deadline passes, never sleep a guessed time. A wait that times out names
what it waited for and what it saw last."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


class TimedOut(AssertionError):
    """A wait's deadline passed; `last` is what was observed last."""

    def __init__(self, what: str, timeout_s: float, last: object):
        super().__init__(f"timed out after {timeout_s:g} s waiting for {what}; last seen: {last!r}")
        self.what, self.timeout_s, self.last = what, timeout_s, last


def poll(observe: Callable[[], T], done: Callable[[T], bool] = bool, *, timeout_s: float,
         interval_s: float) -> tuple[T, bool]:
    """Calls `observe` every `interval_s` until `done(observation)`, for at most `timeout_s`.
    Returns the last observation and whether it was done; observes once more at the deadline,
    so a condition that holds by then is not missed."""
    deadline = time.monotonic() + timeout_s
    while True:
        seen = observe()
        if done(seen):
            return seen, True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return seen, False
        time.sleep(min(interval_s, remaining))


def wait_for(what: str, observe: Callable[[], T], done: Callable[[T], bool] = bool, *,
             timeout_s: float, interval_s: float = 1.0) -> T:
    """`poll`, raising `TimedOut` (an AssertionError naming `what` and the last observation) at
    the deadline; returns the observation that was done."""
    seen, ok = poll(observe, done, timeout_s=timeout_s, interval_s=interval_s)
    if not ok:
        raise TimedOut(what, timeout_s, seen)
    return seen
