"""Is the accelerator a target profile names (GPU delegate, CUDA/TensorRT, NPU delegate) on this host?

A latency figure taken on the host CPU is not a GPU or NPU latency. When the profile's
accelerator is absent here, the build reports latency as not measured, with this reason,
instead of timing the CPU and letting the number pass for the device's.
"""
from __future__ import annotations

from typing import Optional

from .targets import TargetProfile

CPU_PROVIDERS = ("CPUExecutionProvider", "XnnpackExecutionProvider", "DnnlExecutionProvider", "ACLExecutionProvider")


def missing(profile: TargetProfile, fmt: str) -> Optional[str]:
    """Why ``profile``'s accelerator for ``fmt`` cannot run on this host, or None when it can (or none is named)."""
    if fmt == "onnx":
        wanted = [p for p in profile.runtime.onnx_providers if p not in CPU_PROVIDERS]
        if not wanted:
            return None
        import onnxruntime as ort

        available = ort.get_available_providers()
        if any(p in available for p in wanted):
            return None
        return (
            f"{' and '.join(wanted)} not available on this host (onnxruntime {ort.__version__} here offers "
            f"{', '.join(available)}); a CPU time would not be the device's: measure on the device with the bundle's runner"
        )
    if fmt == "tflite" and profile.runtime.tflite_delegates:
        import ctypes

        from .runner.runners import TFLITE_DELEGATE_LIBRARIES

        for name in profile.runtime.tflite_delegates:
            lib = TFLITE_DELEGATE_LIBRARIES.get(name, name)
            try:  # probe with ctypes: a failed load_delegate leaves a half object that complains when collected
                ctypes.CDLL(lib)
            except OSError as e:
                first = (str(e).strip().splitlines() or ["cannot be loaded"])[0][:160]
                return (
                    f"TFLite {name} delegate not available on this host ({first}); a CPU time would not be "
                    "the device's: measure on the device with the bundle's runner"
                )
    return None
