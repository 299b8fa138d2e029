"""The walk-through runner fails when a walk-through breaks, and passes one that holds: each
fixture under fixtures/ is a tiny document that needs no cluster (seconds in all).

    python3 -m pytest -q -p no:cacheprovider tests/docs
"""

import os
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
RUNNER = HERE / "walkthrough"

# fixture: (arguments before the file, what the runner must say)
BROKEN = {
    "wrong-exit.md": ([], "block at line 2: exit 2, expected 3"),
    "failing-command.md": ([], "block at line 1: a command exited 1, which ended the session"),
    "missing-output.md": ([], 'output lacks "refused (409)"'),
    "transcript-line.md": ([], "output lacks the transcript's line (in its order): replica 1: ready"),
    "transcript-order.md": ([], "output lacks the transcript's line (in its order): first"),
    "syntax-error.md": (["--check"], "unexpected EOF while looking for matching"),
    "placeholder-syntax-error.md": (["--check"], "syntax error: unexpected end of file"),
    "placeholder-in-a-run.md": (["--check"], "syntax error near unexpected token"),
    "dangling-annotation.md": (["--check"], "annotation not followed by a shell block"),
    "not-run-without-reason.md": (["--check"], "`not run` needs a reason"),
    "unclosed-fence.md": (["--check"], "a ```sh block that never ends"),
}


def walkthrough(*args, env=None):
    result = subprocess.run([str(RUNNER), *args], capture_output=True, text=True, timeout=60,
                            env=env)
    return result.returncode, result.stdout + result.stderr


@pytest.mark.parametrize("fixture", sorted(BROKEN))
def test_a_broken_walkthrough_fails(fixture):
    args, message = BROKEN[fixture]
    code, output = walkthrough(*args, str(HERE / "fixtures" / fixture))
    assert code != 0, output
    assert message in output, output


def test_a_failing_command_ends_the_session():
    code, output = walkthrough(str(HERE / "fixtures/failing-command.md"))
    assert code != 0
    assert "after the failure" not in output and "the next block" not in output, output


def test_a_walkthrough_that_holds_passes():
    code, output = walkthrough(str(HERE / "fixtures/good.md"))
    assert code == 0, output
    assert "good.md: passed: 4 of 4 blocks run, 1 syntax only" in output, output


def test_one_broken_document_of_several_fails_the_run():
    fixtures = HERE / "fixtures"
    code, output = walkthrough(str(fixtures / "good.md"), str(fixtures / "wrong-exit.md"))
    assert code != 0
    assert "good.md: passed" in output and "walkthrough FAILED: " in output, output


def test_a_document_over_its_time_bound_is_killed_and_fails():
    env = dict(os.environ, TB_WALKTHROUGH_TIMEOUT_S="2")
    code, output = walkthrough(str(HERE / "fixtures/runs-too-long.md"), env=env)
    assert code != 0
    assert "the session ran over 2 s and was killed" in output, output
    assert "after the sleep" not in output, output
