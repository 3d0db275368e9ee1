"""TFLite files: validated and run as they are; the file itself (reference kernels) is the reference.

A .tflite is already converted and quantized: edgeship can check, time and bundle it, but
cannot re-quantize it (the float weights are gone), so only the file's own recipe is built.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, List

from ..errors import UsageError
from . import Source, TensorSpec, sha256_file
from .load import first_line


def load_tflite(path: Path) -> Source:
    from ..runner.runners import TFLiteRunner

    head = Path(path).read_bytes()[:8]
    if len(head) < 8 or head[4:8] != b"TFL3":
        raise UsageError(f"cannot load TFLite model {path}: not a TFLite flatbuffer (no TFL3 identifier; is the file complete?)")
    from ..runner.probe import probe_model

    why = probe_model(str(path), "tflite", {"use_xnnpack": False})  # a crafted file crashes a child, not us
    if why:  # a crash, a hang, or a file that fails on its first runs (which can crash the next one)
        raise UsageError(f"cannot load TFLite model {path}: {why} (is the file complete?)")
    try:
        # Reference kernels without XNNPACK: the artifact's runs (with the profile's delegate) compare to it.
        runner = TFLiteRunner(str(path), use_xnnpack=False)
    except Exception as e:
        raise UsageError(f"cannot load TFLite model {path}: {first_line(e)} (is the file complete?)") from None
    interp = runner._interp
    try:  # a damaged file can open and still hold garbage names or types
        inputs = [_spec(d) for d in runner._in]
        outputs = [_spec(d) for d in runner._out]
        recipe = file_recipe(interp, runner._in)
    except Exception as e:
        raise UsageError(f"cannot load TFLite model {path}: {first_line(e)} (is the file complete?)") from None
    return Source(
        Path(path).stem,
        "tflite",
        Path(path),
        sha256_file(path),
        inputs,
        outputs,
        model=runner,
        reference=runner.run,
        recipe=recipe,
        info={"reference_kernels": "TFLite builtin kernels, no delegate"},
    )


def _spec(d: Any) -> TensorSpec:
    sig = list(d.get("shape_signature", d["shape"]))
    return TensorSpec(d["name"], [None if s < 0 else int(s) for s in sig], "float32")


def file_recipe(interp: Any, inputs: List[Any]) -> str:
    """The recipe a converter used for this file, read from its ops and tensor types."""
    import numpy as np

    ops = {o["op_name"] for o in interp._get_ops_details()}
    tensors = interp.get_tensor_details()
    kinds = {np.dtype(t["dtype"]).name for t in tensors}
    if any(np.dtype(d["dtype"]).kind in "iu" and d["quantization"][0] != 0.0 for d in inputs) or "QUANTIZE" in ops:
        return "int8"
    if "float16" in kinds:
        return "fp16"
    if "int8" in kinds:
        return "dynamic"
    return "fp32"
