"""A device: something that can receive a bundle and run the runner on it.

Every kind of device (SSH board, a separate local Python or an emulated one behind a wrapper) implements
the same four operations on POSIX paths of its own file system; the deploy flow
(edgeship/devices/deploy.py) is written once against them.
"""
from __future__ import annotations

import subprocess
from abc import ABC, abstractmethod
from pathlib import Path
from typing import List, Sequence

from ..errors import DeviceError

DEFAULT_PYTHON = "python3"


class Device(ABC):
    """Run commands on the device, copy folders to and from it, with one Python there."""

    #: how the user named it (the report's section title)
    label: str = ""
    #: the device's Python that runs the runner
    python: str = DEFAULT_PYTHON

    @abstractmethod
    def run(self, argv: Sequence[str], timeout: float = 600) -> subprocess.CompletedProcess:
        """Run ``argv`` on the device; returns the completed process (stdout/stderr as text).

        Raises DeviceError only when the device itself could not be reached; the command's own
        failure is the caller's to read from the return code.
        """

    @abstractmethod
    def upload(self, local_dir: Path, remote_dir: str, timeout: float = 600) -> None:
        """Copy the contents of ``local_dir`` to ``remote_dir`` (which must not exist yet)."""

    @abstractmethod
    def download(self, remote_dir: str, local_dir: Path, timeout: float = 600) -> None:
        """Copy the contents of ``remote_dir`` into the (new) local folder ``local_dir``."""

    def remove(self, remote_dir: str) -> None:
        """Delete a folder this session created on the device (best effort)."""
        try:
            self.run(["rm", "-rf", "--", remote_dir], timeout=60)
        except DeviceError:
            pass

    def close(self) -> None:
        """Release what the device holds open between calls (an SSH master connection)."""

    def python_install_hint(self) -> str:
        return "sudo apt install python3 python3-pip   (or name another Python with ?python=PATH / --remote-python)"


def tail(text: str, lines: int = 1) -> str:
    """The last non-empty lines of a tool's output: usually the sentence that says what went wrong."""
    useful: List[str] = [ln.strip() for ln in (text or "").splitlines() if ln.strip() and not ln.startswith("INFO:")]
    return " / ".join(useful[-lines:]) if useful else "(no output)"
