"""Devices the bundle is deployed to: one interface (Device), one flow (deploy.py).

``parse_device`` turns a --device value into a Device: ``ssh://[user@]host[:port][?python=PATH]``
``local[:PYTHON]`` or ``qemu-arm64[:CPU][?numpy=1|2]`` (an emulated Raspberry Pi prepared by
`edgeship device emulate arm64`: devices/qemu.py). PYTHON may be a wrapper script too; a Python that
runs emulated is recognised by the runner, which then reports latency as not measured.
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
    if spec == "qemu-arm64" or spec.startswith(("qemu-arm64:", "qemu-arm64?")):
        from .qemu import QemuDevice

        return QemuDevice.from_spec(spec)
    raise UsageError(f"unknown device {spec!r}: expected ssh://[user@]host[:port], local[:PYTHON] or qemu-arm64[:CPU][?numpy=1|2]")


__all__ = ["Device", "parse_device"]
