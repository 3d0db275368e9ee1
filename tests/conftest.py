"""Shared fixtures: the sample model is trained once per test session, on the real data."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache private to the session (or $EDGESHIP_CACHE_DIR when a developer wants reuse)."""
    path = Path(os.environ.get("EDGESHIP_CACHE_DIR") or tmp_path_factory.mktemp("cache"))
    os.environ["EDGESHIP_CACHE_DIR"] = str(path)
    return path


@pytest.fixture(scope="session")
def sample(cache_dir: Path) -> Any:
    """(source, dataset, training metrics) of the trained digits model."""
    from edgeship.train import train_sample

    return train_sample("digits")


@pytest.fixture(scope="session")
def arm64_build(sample: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A whole `edgeship build --target arm64` result (BuildResult), bundle on disk."""
    from edgeship.build import run_build

    out = tmp_path_factory.mktemp("dist") / "digits-arm64"
    return run_build(target="arm64", out=str(out), runs=20)


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `edgeship ARGS` in a real subprocess (exit codes and stderr exactly as a user sees them)."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "edgeship", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


# Device-side environments (minimal venvs without TensorFlow, a real sshd): see device_fixtures.py.
from tests.device_fixtures import device_venvs, sshd  # noqa: E402,F401
from tests.emulated_device import aarch64_python, emulated_pi  # noqa: E402,F401
