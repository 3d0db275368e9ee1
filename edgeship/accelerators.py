"""Is the accelerator a target profile names (GPU delegate, CUDA/TensorRT, NPU delegate) on this host?

A latency figure taken on the host CPU is not a GPU or NPU latency. When the profile's
accelerator is absent here, the build reports latency as not measured, with this reason,
instead of timing the CPU and letting the number pass for the device's.
"""
from __future__ import annotations

from typing import Optional

from .runner.accel import CPU_PROVIDERS, accelerator_missing  # noqa: F401  (one implementation, host and device)
from .targets import TargetProfile

HOST_HINT = "a CPU time would not be the device's: measure on the device with the bundle's runner"


def missing(profile: TargetProfile, fmt: str) -> Optional[str]:
    """Why ``profile``'s accelerator for ``fmt`` cannot run on this host, or None when it can (or none is named)."""
    return accelerator_missing(fmt, profile.runtime.onnx_providers, profile.runtime.tflite_delegates, "this host", HOST_HINT)
