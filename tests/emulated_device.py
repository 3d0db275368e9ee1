"""The emulated Raspberry Pi of `edgeship device emulate arm64` (edgeship/devices/qemu.py), for the tests.

Prepared with the package's own code, once, in a folder that outlives the test session
($EDGESHIP_TEST_VENVS/emulated, beside the device venvs), so reruns only pay for the deploys.
qemu-user-static is installed with apt-get when missing (CI runs as root); Debian's arm64 packages
come through a private apt root, the aarch64 wheels through pip.
"""
from __future__ import annotations

import os
import platform
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from edgeship.devices import qemu
from tests.device_fixtures import venv_dir


def emulated_root() -> Path:
    return venv_dir(["emulated-devices"]).parent / "emulated"


def ensure_emulated(*generations: str) -> Path:
    """The folder holding the prepared generations (for $EDGESHIP_EMULATED_DIR); skips where it cannot be built."""
    root = emulated_root()
    if all(qemu._complete(qemu.generation_dir(g, root)) for g in generations) and qemu.find_qemu():
        return root
    can_install = shutil.which("apt-get") and os.geteuid() == 0
    if sys.platform != "linux" or platform.machine() != "x86_64" or not (can_install or (qemu.find_qemu() and shutil.which("apt-get"))):
        pytest.skip("the emulated Pi is prepared on an x86_64 Debian/Ubuntu host (apt-get; root to install qemu-user-static)")
    qemu.ensure_host_tools(lambda m: None)  # once, before the generations are fetched side by side
    with ThreadPoolExecutor(max_workers=len(generations)) as pool:
        for done in [pool.submit(qemu.prepare_generation, g, root=root) for g in generations]:
            done.result()
    return root


@pytest.fixture(scope="session")
def emulated_pi() -> Path:
    """Both generations prepared; `--device qemu-arm64...` finds them through $EDGESHIP_EMULATED_DIR."""
    root = ensure_emulated("1", "2")
    os.environ["EDGESHIP_EMULATED_DIR"] = str(root)
    return root


@pytest.fixture(scope="session")
def aarch64_python(emulated_pi: Path) -> Path:
    """The NumPy 1 + tflite-runtime 2.14 generation's wrapper, to deploy to as `local:WRAPPER`."""
    return qemu.cpu_python("1", root=emulated_pi)
