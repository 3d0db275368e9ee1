"""Is a profile's accelerator (TFLite delegate, onnxruntime GPU/NPU provider) present where this runs?

Shared by the build host (edgeship/accelerators.py) and the device runner: a latency taken on the
CPU is not a GPU or NPU latency, so when the accelerator is absent the figure is reported as not
measured, with this reason. NumPy-free and edgeship-free (shipped to devices); Python 3.9+.
"""
from __future__ import annotations

from typing import Optional, Sequence

CPU_PROVIDERS = ("CPUExecutionProvider", "XnnpackExecutionProvider", "DnnlExecutionProvider", "ACLExecutionProvider")


def accelerator_missing(
    fmt: str, onnx_providers: Sequence[str], tflite_delegates: Sequence[str], where: str = "this host", hint: str = ""
) -> Optional[str]:
    """Why the accelerator named for ``fmt`` cannot run ``where``, or None when it can (or none is named)."""
    tail = f"; {hint}" if hint else ""
    if fmt == "onnx":
        wanted = [p for p in onnx_providers or [] if p not in CPU_PROVIDERS]
        if not wanted:
            return None
        import onnxruntime as ort

        available = ort.get_available_providers()
        if any(p in available for p in wanted):
            return None
        return f"{' and '.join(wanted)} not available on {where} (onnxruntime {ort.__version__} here offers {', '.join(available)}){tail}"
    if fmt == "tflite" and tflite_delegates:
        import ctypes

        from .runners import TFLITE_DELEGATE_LIBRARIES

        for name in tflite_delegates:
            lib = TFLITE_DELEGATE_LIBRARIES.get(name, name)
            try:  # probe with ctypes: a failed load_delegate leaves a half object that complains when collected
                ctypes.CDLL(lib)
            except OSError as e:
                first = (str(e).strip().splitlines() or ["cannot be loaded"])[0][:160]
                return f"TFLite {name} delegate not available on {where} ({first}){tail}"
    return None
