"""SSH devices through the system's OpenSSH client (ssh, scp).

Using the real client means the user's ~/.ssh/config (Host aliases, IdentityFile, ProxyJump),
keys and agent all apply exactly as they do for a manual ``ssh pi@raspberrypi``. BatchMode keeps
a missing key from turning into a password prompt that hangs a CI job. One deploy makes about
eight ssh/scp calls; they share one connection (ControlMaster), so a board on Wi-Fi pays for one
handshake and one login, not eight.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import List, Optional, Sequence
from urllib.parse import parse_qs, urlsplit

from ..errors import DeviceError, UsageError
from .base import DEFAULT_PYTHON, Device, tail

CONNECT_TIMEOUT_S = 10
SHARE_ENV = "EDGESHIP_SSH_SHARE"  # 0: one connection per call (no ControlMaster)
# What a host name, an address or a ~/.ssh/config alias can hold, and a user name: never a leading '-'
# (ssh would read it as an option: -oProxyCommand=... runs a command here).
_HOST = re.compile(r"^[A-Za-z0-9_.:%\[\]][A-Za-z0-9_.:%\[\]-]*$")
_USER = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.@\\$-]*$")

# (substring of ssh's stderr, what it means for the user)
_SSH_FAILURES = (
    ("permission denied", "authentication refused by {host}: ssh has no key that {host} accepts (try: ssh-copy-id {dest})"),
    ("too many authentication failures", "authentication refused by {host}: too many keys offered; set IdentityFile for it in ~/.ssh/config"),
    ("host key verification failed", "host key of {host} is unknown or has changed: connect once with 'ssh {dest}' to check and accept it"),
    ("remote host identification has changed", "host key of {host} has changed: check it, then remove the old one with ssh-keygen -R"),
    ("could not resolve hostname", "{host} is unreachable: the name does not resolve"),
    ("connection refused", "{host} is unreachable: connection refused (is sshd running there, on this port?)"),
    ("timed out", "{host} is unreachable: the connection timed out"),
    ("no route to host", "{host} is unreachable: no route to host"),
    ("network is unreachable", "{host} is unreachable: network is unreachable"),
    ("connection closed", "{host} closed the connection before ssh could log in"),
    ("connection reset", "{host} reset the connection before ssh could log in"),
)


class SSHDevice(Device):
    def __init__(
        self,
        host: str,
        user: Optional[str] = None,
        port: Optional[int] = None,
        python: Optional[str] = None,
        ssh_config: Optional[str] = None,
        label: Optional[str] = None,
    ) -> None:
        if not _HOST.match(host or "") or host in (".", ".."):
            raise UsageError(f"refusing device host {host!r}: a host name, address or ssh alias (letters, digits, '.', '-', ':'; not starting with '-')")
        if user is not None and not _USER.match(user):
            raise UsageError(f"refusing device user {user!r}: a login name (letters, digits, '.', '_', '-'; not starting with '-')")
        self.host, self.user, self.port = host, user, port
        self.python = python or DEFAULT_PYTHON
        self.ssh_config = ssh_config
        self.label = label or f"ssh://{self.dest}" + (f":{port}" if port else "")
        self._control_dir: Optional[str] = None

    @classmethod
    def from_url(cls, url: str, python: Optional[str] = None, ssh_config: Optional[str] = None) -> "SSHDevice":
        """``ssh://[user@]host[:port][?python=PATH]``; host may be an alias from ~/.ssh/config."""
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            raise UsageError(f"{url}: the port must be a number, as in ssh://pi@raspberrypi:22") from None
        if parts.scheme != "ssh" or not parts.hostname:
            raise UsageError(f"{url}: expected ssh://[user@]host[:port], e.g. ssh://pi@raspberrypi.local")
        query = parse_qs(parts.query)
        unknown = sorted(set(query) - {"python"})
        if unknown:
            raise UsageError(f"{url}: unknown option {', '.join(unknown)} (known: python)")
        py = (query.get("python") or [None])[0] or python
        if py is not None and (not py or py.startswith("-")):
            raise UsageError(f"refusing remote Python {py!r}: name a program or a path (not an option)")
        # the Python is part of the name: two environments on one board are two report sections
        label = url.split("?")[0] + (f"?python={py}" if py and py != DEFAULT_PYTHON else "")
        return cls(parts.hostname, parts.username, port, py, ssh_config, label=label)

    @property
    def dest(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    def _options(self, port_flag: str) -> List[str]:
        opts: List[str] = []
        if self.ssh_config:
            opts += ["-F", self.ssh_config]
        if self.user:  # the user as an option's value, never inside the destination ssh parses
            opts += ["-o", f"User={self.user}"] if port_flag == "-P" else ["-l", self.user]
        if self.port:
            opts += [port_flag, str(self.port)]
        opts += ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}", "-o", "ServerAliveInterval=15"]
        if os.environ.get(SHARE_ENV, "1") == "0":  # e.g. Windows' OpenSSH, which has no ControlMaster
            return opts
        if self._control_dir is None:  # short: a socket path has a ~100 character limit
            self._control_dir = tempfile.mkdtemp(prefix="es-ssh-", dir="/tmp" if Path("/tmp").is_dir() else None)
        return opts + ["-o", "ControlMaster=auto", "-o", f"ControlPath={self._control_dir}/%C", "-o", "ControlPersist=60"]

    def close(self) -> None:
        """Stop the shared master connection, if one was opened."""
        if self._control_dir is None:
            return
        if any(Path(self._control_dir).iterdir()):
            try:
                subprocess.run(["ssh", *self._options("-p"), "-O", "exit", "--", self.host], capture_output=True, timeout=10, stdin=subprocess.DEVNULL)
            except (OSError, subprocess.TimeoutExpired):
                pass
        shutil.rmtree(self._control_dir, ignore_errors=True)
        self._control_dir = None

    def _call(self, cmd: List[str], timeout: float, what: str) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise DeviceError(f"{cmd[0]} not found: install the OpenSSH client (sudo apt install openssh-client)") from None
        except subprocess.TimeoutExpired:
            raise DeviceError(f"{self.label}: {what} did not finish within {timeout:.0f} s") from None

    def failure(self, stderr: str, what: str) -> DeviceError:
        """The DeviceError that says what ssh/scp's exit status 255 meant."""
        low = stderr.lower()
        if "no space left on device" in low:
            return DeviceError(f"{self.label}: out of disk space while {what}; free some space there ({tail(stderr)})")
        for needle, message in _SSH_FAILURES:
            if needle in low:
                return DeviceError(message.format(host=self.host, dest=self.dest) + f" [ssh: {tail(stderr)}]")
        return DeviceError(f"{self.label}: ssh failed while {what}: {tail(stderr)}")

    def run(self, argv: Sequence[str], timeout: float = 600) -> subprocess.CompletedProcess:
        cmd = ["ssh", *self._options("-p"), "--", self.host, remote_command(argv)]
        r = self._call(cmd, timeout, f"running {argv[0]}")
        if r.returncode == 255:  # ssh's own failure; a remote command's status is passed through
            raise self.failure(r.stderr, f"running {Path(argv[0]).name}")
        return r

    def _scp(self, src: str, dst: str, timeout: float, what: str) -> None:
        r = self._call(["scp", "-q", "-r", "-p", *self._options("-P"), "--", src, dst], timeout, what)
        if r.returncode != 0:
            raise self.failure(r.stderr, what)

    def _remote(self, path: str) -> str:
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{host}:{path}"  # the user goes as -o User= (see _options)

    def upload(self, local_dir: Path, remote_dir: str, timeout: float = 600) -> None:
        self._scp(str(local_dir), self._remote(remote_dir), timeout, "copying the bundle")

    def download(self, remote_dir: str, local_dir: Path, timeout: float = 600) -> None:
        self._scp(self._remote(remote_dir), str(local_dir), timeout, "fetching the results")


def remote_command(argv: Sequence[str]) -> str:
    """``argv`` as one shell command for the device, each word quoted; a program named ``~/...`` or
    ``~user/...`` (``?python=~/env/bin/python``) keeps its tilde outside the quotes, so the device's
    shell expands it to that home folder, as it would typed by hand."""
    words = [shlex.quote(a) for a in argv]
    m = re.match(r"^(~[A-Za-z0-9_.-]*)(/.*)?$", argv[0]) if argv else None
    if m:
        rest = (m.group(2) or "")[1:]  # the shell expands ~ only up to an unquoted '/'
        words[0] = m.group(1) + ("/" + (shlex.quote(rest) if rest else "") if m.group(2) else "")
    return " ".join(words)
