"""An emulated aarch64 device: Debian's arm64 Python 3.11 under qemu-user, with aarch64 wheels.

The arm64 bundle's TFLite artifacts then run on the aarch64 build of the runtime (NEON/XNNPACK
kernels, emulated), which is what a Raspberry Pi runs; `deploy --device local:WRAPPER` drives it
like any other local Python. Built once (qemu-user-static and Debian's arm64 packages through apt,
wheels for manylinux aarch64 through pip) and cached beside the device venvs.

Only tflite-runtime 2.14 + NumPy 1.26 here: under Debian 12's qemu 7.2, ai-edge-litert 2.3 and
onnxruntime 1.31 crash (SIGSEGV) when they start, so an emulated LiteRT/ORT device would test qemu.
"""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgeship.venvs import build_in_place
from tests.device_fixtures import venv_dir

WHEELS = ["numpy==1.26.4", "tflite-runtime==2.14.0"]
# Debian 12 (bookworm) arm64 packages that make a working python3.11 with its stdlib.
DEBS = [
    "python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib", "libc6", "zlib1g", "libexpat1", "libffi8",
    "libssl3", "libgcc-s1", "libstdc++6", "libbz2-1.0", "liblzma5", "libsqlite3-0", "libuuid1", "libncursesw6",
    "libtinfo6", "libreadline8", "libdb5.3", "libcrypt1", "libnsl2", "libtirpc3",
]


def _apt(*args: str) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    r = subprocess.run(["apt-get", *args], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"apt-get {' '.join(args)} failed: {r.stderr[-1500:]}")


def ensure_aarch64_python() -> Path:
    """A wrapper script that runs Debian's arm64 python3.11 under qemu-aarch64-static, wheels on its path."""
    dest = venv_dir(["aarch64-qemu", *WHEELS, *DEBS])
    wrapper = dest / "python3"
    if wrapper.is_file():
        return wrapper
    if platform.machine() != "x86_64" or not shutil.which("apt-get") or os.geteuid() != 0:
        pytest.skip("the emulated aarch64 device is built on an x86_64 Debian host as root (apt-get for qemu and arm64 packages)")
    if not shutil.which("qemu-aarch64-static"):
        _apt("update", "-qq")
        _apt("install", "-y", "-qq", "qemu-user-static")
    arches = subprocess.run(["dpkg", "--print-foreign-architectures"], capture_output=True, text=True).stdout.split()
    if "arm64" not in arches:
        subprocess.run(["dpkg", "--add-architecture", "arm64"], check=True)
        _apt("update", "-qq")

    def build(work: Path) -> None:
        (work / "debs").mkdir(parents=True)
        r = subprocess.run(["apt-get", "download", "-qq", *[f"{d}:arm64" for d in DEBS]], cwd=work / "debs", capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"apt-get download of arm64 packages failed: {r.stderr[-1500:]}")
        for deb in sorted((work / "debs").glob("*.deb")):
            subprocess.run(["dpkg", "-x", str(deb), str(work / "root")], check=True)
        shutil.rmtree(work / "debs")
        tags = [f"--platform=manylinux_2_{v}_aarch64" for v in (36, 35, 34, 31, 28, 27, 17)] + ["--platform=manylinux2014_aarch64"]
        pip = subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--target", str(work / "site"),
             "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp", *tags, *WHEELS],
            capture_output=True, text=True,
        )
        if pip.returncode != 0:
            raise RuntimeError(f"pip install of aarch64 wheels failed: {pip.stderr[-1500:]}")
        (work / "python3").write_text(  # final paths: the folder is renamed to dest once complete
            "#!/bin/sh\n# Debian's arm64 python3.11 under qemu-user (tests/emulated_device.py)\n"
            f'PYTHONPATH="{dest}/site" exec qemu-aarch64-static -L "{dest}/root" "{dest}/root/usr/bin/python3.11" "$@"\n'
        )
        (work / "python3").chmod(0o755)

    build_in_place(dest, build, lambda d: (d / "python3").is_file())
    return wrapper


@pytest.fixture(scope="session")
def aarch64_python() -> Path:
    return ensure_aarch64_python()
