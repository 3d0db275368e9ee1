"""A separate Python environment on this machine as a device (``local`` or ``local:PYTHON``).

Same flow as an SSH board, minus the network: useful to try a bundle against another NumPy or
runtime (say NumPy 1 + tflite-runtime, as on many Pi images) without a board at hand.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Optional, Sequence

from ..errors import DeviceError
from .base import DEFAULT_PYTHON, Device


class LocalDevice(Device):
    def __init__(self, python: Optional[str] = None) -> None:
        self.label = f"local:{python or DEFAULT_PYTHON}"
        self.python = os.path.expanduser(python or DEFAULT_PYTHON)  # local:~/env/bin/python, as a shell would

    @classmethod
    def from_spec(cls, spec: str) -> "LocalDevice":
        """``local`` (python3 on PATH) or ``local:/path/to/venv/bin/python``."""
        _, _, python = spec.partition(":")
        return cls(python or None)

    def run(self, argv: Sequence[str], timeout: float = 600) -> subprocess.CompletedProcess:
        try:
            # A clean environment as on a device: nothing of the host's PYTHONPATH leaks in.
            env = {k: v for k, v in __import__("os").environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
            return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, env=env)
        except FileNotFoundError:
            return subprocess.CompletedProcess(list(argv), 127, "", f"{argv[0]}: command not found")
        except OSError as e:  # not executable, or a binary for another architecture
            raise DeviceError(f"{self.label}: cannot run {argv[0]}: {e.strerror or e}") from None
        except subprocess.TimeoutExpired:
            raise DeviceError(f"{self.label}: {Path(argv[0]).name} did not finish within {timeout:.0f} s") from None

    def upload(self, local_dir: Path, remote_dir: str, timeout: float = 600) -> None:
        try:
            shutil.copytree(local_dir, remote_dir)
        except OSError as e:
            raise DeviceError(f"{self.label}: copying the bundle to {remote_dir} failed: {e.strerror or e}") from None

    def download(self, remote_dir: str, local_dir: Path, timeout: float = 600) -> None:
        shutil.copytree(remote_dir, local_dir)

    def remove(self, remote_dir: str) -> None:
        shutil.rmtree(remote_dir, ignore_errors=True)

    def python_install_hint(self) -> str:
        return "give the path of an installed Python, as in local:/path/to/venv/bin/python"
