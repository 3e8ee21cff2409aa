"""A job's log ends with its error: the traceback, or a user error's one-line message."""

from __future__ import annotations

import subprocess
import sys

import pytest

from convscope.logs import log_to_file
from convscope.store.shards import ShardIdentityError


def _fail_inside_log(path):
    print("working on shard 3")
    {}["missing key"]


def test_a_traceback_ends_the_log(tmp_path):
    log = tmp_path / "logs" / "job.log"
    with pytest.raises(KeyError):
        with log_to_file(log):
            _fail_inside_log(log)
    text = log.read_text()
    assert text.startswith("working on shard 3\n")
    lines = text.rstrip("\n").splitlines()
    assert lines[0] == "working on shard 3"
    assert "Traceback (most recent call last):" in text
    assert "_fail_inside_log" in text  # the frame where it happened
    assert lines[-1] == "KeyError: 'missing key'"


def test_a_user_error_ends_the_log_with_its_message_alone(tmp_path):
    log = tmp_path / "job.log"
    with pytest.raises(ShardIdentityError):
        with log_to_file(log):
            raise ShardIdentityError("shard x.h5 was extracted with a different setup")
    assert log.read_text() == ("convscope: ShardIdentityError: shard x.h5 was extracted "
                               "with a different setup\n")


def test_a_failing_script_writes_its_error_to_the_log_and_the_console_still_fails(tmp_path):
    """The whole path of a job: a separate Python process, output of C level writes too."""
    log = tmp_path / "job.log"
    code = (
        "import os, sys\n"
        "from convscope.logs import log_to_file\n"
        f"with log_to_file({str(log)!r}):\n"
        "    os.write(1, b'from C\\n')\n"
        "    print('from Python', flush=True)\n"
        "    raise RuntimeError('the GPU fell off the bus')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 1
    assert "RuntimeError: the GPU fell off the bus" in result.stderr  # the console too
    lines = log.read_text().splitlines()
    assert lines[:2] == ["from C", "from Python"]
    assert lines[-1] == "RuntimeError: the GPU fell off the bus"


def test_a_successful_body_writes_no_error(tmp_path):
    log = tmp_path / "job.log"
    with log_to_file(log):
        print("done")
    assert log.read_text() == "done\n"
