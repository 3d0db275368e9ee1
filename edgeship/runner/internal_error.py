"""The last guard of both command lines: an unanticipated exception becomes one line, never a traceback.

Stdlib only (the device runner uses it too). The line names the stage that was running and the
log file that holds the full traceback; ``--debug`` or ``EDGESHIP_DEBUG=1`` prints the traceback
in place instead. Exit code 70 is BSD's EX_SOFTWARE (an internal software error), so CI can tell
a crash from a missed budget (1) or bad input (2).
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
import traceback
from typing import Iterator, List, Optional

EXIT_INTERNAL = 70
DEBUG_ENV = "EDGESHIP_DEBUG"

_stage: List[str] = ["startup"]


def set_stage(name: str) -> None:
    """Name what runs now (a command, a conversion, a parity check): the internal-error line quotes it."""
    _stage[-1] = name


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    """Name a nested stage for its duration; an exception leaving it carries the name to the guard."""
    _stage.append(name)
    try:
        yield
    except BaseException as e:
        if not hasattr(e, "edgeship_stage"):
            try:
                e.edgeship_stage = name  # type: ignore[attr-defined]
            except AttributeError:  # exceptions with __slots__
                pass
        raise
    finally:
        _stage.pop()


def current_stage(exc: Optional[BaseException] = None) -> str:
    return getattr(exc, "edgeship_stage", None) or _stage[-1]


def debug_requested() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def pop_debug_flag(argv: List[str]) -> bool:
    """Remove ``--debug`` from anywhere before a ``--`` (so it works after the subcommand, too)."""
    end = argv.index("--") if "--" in argv else len(argv)
    found = "--debug" in argv[:end]
    if found:
        argv[:] = [a for i, a in enumerate(argv) if not (i < end and a == "--debug")]
    return found


def report(exc: BaseException, prog: str, debug: bool) -> int:
    """Print the one line (or the traceback with ``debug``), write the log file; return the exit code."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    message = f"{type(exc).__name__}: {lines[0][:300]}" if lines else type(exc).__name__
    where = current_stage(exc)
    if debug:
        sys.stderr.write(text)
        sys.stderr.write(f"error: internal error in {where}: {message}\n")
        sys.stderr.flush()
        return EXIT_INTERNAL
    log = _write_log(prog, where, text)
    tail = f"full traceback in {log}" if log else "the traceback could not be written to a log file"
    sys.stderr.write(
        f"error: internal error in {where}: {message} ({tail}; rerun with --debug or {DEBUG_ENV}=1 to see it here, "
        "and please report it)\n"
    )
    sys.stderr.flush()
    return EXIT_INTERNAL


def _write_log(prog: str, where: str, text: str) -> Optional[str]:
    try:
        fd, path = tempfile.mkstemp(prefix=f"{prog}-internal-error-{time.strftime('%Y%m%d-%H%M%S')}-", suffix=".log")
        with os.fdopen(fd, "w") as f:
            f.write(f"{prog} {' '.join(sys.argv[1:])}\nstage: {where}\npython: {sys.version.split()[0]}\n\n{text}")
        return path
    except OSError:
        return None
