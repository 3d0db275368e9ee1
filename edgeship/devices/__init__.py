"""Devices the bundle is deployed to: one interface (Device), one flow (deploy.py).

``parse_device`` turns a --device value into a Device: ``ssh://[user@]host[:port][?python=PATH]``
or ``local[:PYTHON]``. PYTHON may be a wrapper script, e.g. one that runs an arm64 Python under
qemu-user (the tests' emulated aarch64 device); the runner then reports itself as emulated.
"""
from __future__ import annotations

from typing import Optional

from ..errors import UsageError
from .base import Device


def parse_device(spec: str, remote_python: Optional[str] = None, ssh_config: Optional[str] = None) -> Device:
    if spec.startswith("ssh://"):
        from .ssh import SSHDevice

        return SSHDevice.from_url(spec, python=remote_python, ssh_config=ssh_config)
    if spec == "local" or spec.startswith("local:"):
        from .local import LocalDevice

        return LocalDevice.from_spec(spec)
    raise UsageError(f"unknown device {spec!r}: expected ssh://[user@]host[:port] or local[:PYTHON]")


__all__ = ["Device", "parse_device"]
