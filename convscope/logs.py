"""Send a job's output (prints, tqdm progress, warnings, its error) to its log file."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback
from pathlib import Path

__all__ = ["log_to_file", "is_user_error", "error_text"]


def is_user_error(exc: BaseException) -> bool:
    """True for convscope's own errors about the input (config, dataset, model, shards).

    Their messages are written for the user (they name the file or key and what
    would be valid), so a log shows the message alone, without a traceback.
    """
    return type(exc).__module__.startswith("convscope.") and isinstance(exc, (ValueError, OSError))


def error_text(exc: BaseException) -> str:
    """What a log shows for ``exc``: the one-line message of a user error, else the traceback."""
    if is_user_error(exc):
        return f"convscope: {type(exc).__name__}: {exc}\n"
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


@contextlib.contextmanager
def log_to_file(path: str | os.PathLike | None):
    """Redirect stdout and stderr (also of C code and child processes) to ``path``.

    If the body raises, the log ends with the error (`error_text`) before the
    exception propagates, so a failed job's log says why it failed. With
    ``path`` None, nothing is redirected.
    """
    if path is None:
        yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "a", buffering=1) as fh:
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, force=True,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        try:
            # Python-level writes go to the log too where sys.stdout/sys.stderr are not
            # the process's own descriptors (a test runner, a notebook).
            with contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
                try:
                    yield
                except SystemExit as exc:
                    if exc.code not in (None, 0):
                        _write_error(str(exc.code) + "\n")
                    raise
                except BaseException as exc:
                    _write_error(error_text(exc))
                    raise
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _write_error(text: str) -> None:
    """Write ``text`` after everything the job printed (stdout first, then the error)."""
    sys.stdout.flush()
    sys.stderr.write(text)
    sys.stderr.flush()
