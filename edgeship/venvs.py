"""Side Python environments for tools whose pins clash with ours (onnx2tf; the tests' device venvs).

A venv is built under a temporary name and renamed into place only once pip succeeded, so a
half-installed environment is never mistaken for a working one.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable, List, Optional

from .errors import EXIT_CONVERSION, EdgeshipError

MARKER = "edgeship-requirements.txt"


def base_python() -> str:
    """The interpreter behind our own venv (a venv made from a venv would chain to it anyway)."""
    return getattr(sys, "_base_executable", None) or shutil.which("python3") or sys.executable


def venv_python(dest: Path) -> Path:
    return Path(dest) / "bin" / "python"


def is_complete(dest: Path) -> bool:
    return (Path(dest) / MARKER).is_file() and venv_python(dest).exists()


def build_in_place(dest: Path, build: Callable[[Path], None], complete: Callable[[Path], bool]) -> None:
    """Run ``build(work)`` in a private partial folder, then rename it to ``dest``; a failure or an
    interrupt removes the partial folder, and a process that finished ``dest`` first wins."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = dest.with_name(f"{dest.name}.partial-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    try:
        build(work)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    shutil.rmtree(dest, ignore_errors=True)
    try:
        os.replace(work, dest)
    except OSError:  # another process finished the same folder first: use theirs
        shutil.rmtree(work, ignore_errors=True)
        if not complete(dest):
            raise


def ensure_venv(dest: Path, requirements: List[str], python: Optional[str] = None, force: bool = False) -> Path:
    """The python of a venv at ``dest`` holding ``requirements`` (created once, renamed into place when complete)."""
    if is_complete(dest) and not force:
        return venv_python(dest)

    def build(work: Path) -> None:
        # No --copies: the venv's python must find its stdlib; the base interpreter stays where it is.
        made = subprocess.run([python or base_python(), "-m", "venv", str(work)], capture_output=True, text=True)
        if made.returncode != 0:
            raise EdgeshipError(f"cannot create a virtual environment in {work}: {_last(made.stderr)}", EXIT_CONVERSION)
        pip = subprocess.run(
            [str(venv_python(work)), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--only-binary=:all:", *requirements],
            capture_output=True,
            text=True,
        )
        if pip.returncode != 0:
            raise EdgeshipError(
                f"pip install {' '.join(requirements[:3])}{' ...' if len(requirements) > 3 else ''} failed: {_last(pip.stderr)} "
                "(is PyPI reachable? the partial environment was removed)",
                EXIT_CONVERSION,
            )
        (work / MARKER).write_text("\n".join(requirements) + "\n")

    build_in_place(Path(dest), build, is_complete)
    # venv scripts carry the creation path in their shebangs; the python symlink does not, and we only use it.
    return venv_python(dest)


def _last(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip() and not ln.startswith("WARNING: Location")]
    return (lines[-1] if lines else "no output")[:300]
