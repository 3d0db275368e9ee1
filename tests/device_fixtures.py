"""Real device-side environments for the runner: minimal virtualenvs and an OpenSSH server.

The venvs hold NumPy and one runtime and never TensorFlow, like a Raspberry Pi image; they are
created with ``python3 -m venv`` + pip from PyPI once and cached under a folder keyed by the
requirement list ($EDGESHIP_TEST_VENVS, default ~/.cache/edgeship/test-venvs), so reruns are fast.
The sshd is the system's real OpenSSH server on 127.0.0.1 with generated host and user keys
(installed with apt-get when missing: tests run as root in CI).
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

from edgeship import venvs

# name -> pinned requirements. The first is what many Raspberry Pi images carry (NumPy 1 with
# tflite-runtime 2.14); the second is the current stack (NumPy 2, LiteRT, onnxruntime).
VENV_REQUIREMENTS: Dict[str, List[str]] = {
    "np1-tflite-runtime": ["numpy==1.26.4", "tflite-runtime==2.14.0"],
    "np2-litert-ort": ["numpy==2.4.6", "ai-edge-litert==2.3.0", "onnxruntime==1.31.1"],
}

# `serve` on the device: the current stack plus its optional HTTP server (tests/test_serve.py), and
# the other side, a user's client machine with Triton's own v2 client (no edgeship, no runtime).
SERVE_REQUIREMENTS: List[str] = [*VENV_REQUIREMENTS["np2-litert-ort"], "uvicorn==0.54.0", "starlette==1.10.0", "opencv-python-headless==5.0.0.93"]
CLIENT_REQUIREMENTS: List[str] = ["numpy==2.4.6", "tritonclient[http]==2.73.0"]


def venv_dir(requirements: List[str]) -> Path:
    root = Path(os.environ.get("EDGESHIP_TEST_VENVS") or Path.home() / ".cache" / "edgeship" / "test-venvs")
    key = "\n".join([f"py{sys.version_info[0]}.{sys.version_info[1]}", sys.platform, *sorted(requirements)])
    return root / hashlib.sha256(key.encode()).hexdigest()[:16]


def ensure_venv(requirements: List[str]) -> Path:
    """The python of a venv holding exactly ``requirements`` (created once, renamed into place when complete)."""
    return venvs.ensure_venv(venv_dir(requirements), requirements)


@pytest.fixture(scope="session")
def device_venvs() -> Dict[str, Path]:
    """name -> python of each minimal device venv (no TensorFlow, no OpenCV, no edgeship)."""
    return {name: ensure_venv(reqs) for name, reqs in VENV_REQUIREMENTS.items()}


# --------------------------------------------------------------------------- sshd


def stop(proc: subprocess.Popen, timeout: float) -> None:
    """Ask a server the tests started to stop, and kill it when it does not within ``timeout`` s."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_openssh() -> str:
    """Path of sshd, installing openssh-server/-client with apt-get when missing (root in CI)."""
    for cand in ("/usr/sbin/sshd", shutil.which("sshd") or ""):
        if cand and os.path.exists(cand) and shutil.which("ssh") and shutil.which("scp"):
            return cand
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("OpenSSH server not installed and cannot install it (needs root and apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, capture_output=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "openssh-server", "openssh-client"], check=True, capture_output=True, env=env)
    return "/usr/sbin/sshd"


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgeship-test", "-f", str(path)], check=True)
    return path


@dataclass
class SSHServer:
    host: str
    port: int
    user: str
    key: Path  # the user's private key (authorized)
    other_key: Path  # a key the server does not accept
    config: Path  # an ssh_config with Host 'edgeship-test' and defaults for 127.0.0.1
    alias: str = "edgeship-test"

    @property
    def url(self) -> str:
        return f"ssh://{self.user}@{self.host}:{self.port}"


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHServer]:
    """A real OpenSSH server on 127.0.0.1:<free port>, public-key only, with its own generated keys."""
    with start_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@contextlib.contextmanager
def start_sshd(d: Path) -> Iterator[SSHServer]:
    """Run sshd with everything (keys, config, known_hosts, a client ssh_config) in folder ``d``.

    Also usable by hand: python -c "from tests.device_fixtures import *; ..." to try deploy on it.
    """
    sshd_bin = ensure_openssh()
    os.chmod(d, 0o700)
    host_key = keygen(d / "host_ed25519")
    user_key = keygen(d / "user_ed25519")
    other_key = keygen(d / "other_ed25519")
    (d / "authorized_keys").write_text((d / "user_ed25519.pub").read_text())
    os.chmod(d / "authorized_keys", 0o600)
    Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory sshd insists on
    port = free_port()
    import pwd

    user = pwd.getpwuid(os.getuid()).pw_name
    cfg = d / "sshd_config"
    cfg.write_text(
        "\n".join(
            [
                "ListenAddress 127.0.0.1",
                f"Port {port}",
                f"HostKey {host_key}",
                f"PidFile {d / 'sshd.pid'}",
                f"AuthorizedKeysFile {d / 'authorized_keys'}",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PermitRootLogin prohibit-password",
                "UsePAM no",
                "StrictModes no",
                "Subsystem sftp internal-sftp",
                "LogLevel ERROR",
            ]
        )
        + "\n"
    )
    known = d / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {(d / 'host_ed25519.pub').read_text().split(' edgeship')[0]}\n")
    client = d / "ssh_config"
    common = [
        f"  User {user}",
        f"  IdentityFile {user_key}",
        "  IdentitiesOnly yes",
        f"  UserKnownHostsFile {known}",
        "  StrictHostKeyChecking yes",
    ]
    client.write_text(
        "\n".join(["Host edgeship-test", "  HostName 127.0.0.1", f"  Port {port}", *common, "Host 127.0.0.1", *common]) + "\n"
    )
    proc = subprocess.Popen([sshd_bin, "-D", "-e", "-f", str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 15
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited: {proc.stdout.read() if proc.stdout else ''}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.1)
    server = SSHServer("127.0.0.1", port, user, user_key, other_key, client)
    try:
        yield server
    finally:
        stop(proc, 5)
