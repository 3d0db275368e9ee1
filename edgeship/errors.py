"""Errors a user can act on, each with its documented exit code.

Anything raised as an ``EdgeshipError`` reaches the user as one line, never a traceback.
"""
from __future__ import annotations

# Documented exit codes (README "Exit codes").
EXIT_OK = 0
EXIT_CHECK_FAILED = 1  # a required artifact missed its parity/latency budget, or a regression
EXIT_USAGE = 2  # bad input: arguments, profiles, model files, data, ops a format has no kernel for
EXIT_CONVERSION = 3  # a real converter could not produce an artifact (e.g. not integer-only for an NPU)
EXIT_DEVICE = 4  # a device could not be reached or lacks what the runner needs
EXIT_INTERRUPTED = 130


class EdgeshipError(Exception):
    exit_code = EXIT_USAGE

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(EdgeshipError):
    """Bad input from the user: fix the argument, file or profile named in the message."""

    exit_code = EXIT_USAGE


class ConversionError(EdgeshipError):
    exit_code = EXIT_CONVERSION


class DeviceError(EdgeshipError):
    exit_code = EXIT_DEVICE


class CheckFailed(EdgeshipError):
    exit_code = EXIT_CHECK_FAILED


class DiskFull(EdgeshipError):
    """The disk filled up while writing: not a converter's fault, and not bad input. Exit 4, like a
    device that is out of disk: the machine lacks what the job needs."""

    exit_code = EXIT_DEVICE


def disk_full(e: BaseException) -> bool:
    """Whether ``e`` (or an exception it came from) is a full disk or an exceeded quota; libraries
    such as TensorFlow re-raise it as text, so the message counts too."""
    import errno

    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(e)
        if "No space left on device" in text or "Disk quota exceeded" in text:
            return True
        e = e.__cause__ or e.__context__  # type: ignore[assignment]
    return False


DISK_FULL_HINT = "the disk is full (No space left on device): free some space, or give --out on another disk, and run again"


class UnsupportedOps(UsageError, ConversionError):
    """The model uses ops the target format has no kernel for: a conversion failure whose fix is
    in the model (replace the named layer), so it exits as bad input (2)."""

    exit_code = EXIT_USAGE
