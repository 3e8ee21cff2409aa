"""Send a job's output (prints, tqdm progress, warnings) to its log file."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path

__all__ = ["log_to_file"]


@contextlib.contextmanager
def log_to_file(path: str | os.PathLike | None):
    """Redirect stdout and stderr (also of C code and child processes) to ``path``.

    With ``path`` None, nothing is redirected.
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
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
