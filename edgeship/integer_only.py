"""Proof that a TFLite model is integer-only, read from the file itself.

TFLiteConverter with only TFLITE_BUILTINS_INT8 does not always refuse an op that has no
integer kernel: it may keep the op in float between DEQUANTIZE and QUANTIZE (seen with SIN,
FLOOR and SQUARE in TF 2.21). An NPU cannot run such a model, so the build checks every
tensor and op of the produced file instead of trusting the converter's flags.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import List

import numpy as np

# Dtypes an integer-only accelerator can hold: quantized activations, int32 biases and shapes, masks.
INTEGER_KINDS = "iub"
# Ops that only move between float and integer; reported apart from the ops that compute in float.
CONVERSION_OPS = ("QUANTIZE", "DEQUANTIZE")


@dataclass
class FloatOp:
    op: str
    output: str  # the op's first output tensor: its name carries the layer path


def float_ops(path: Path) -> List[FloatOp]:
    """Every op of the .tflite at ``path`` that reads or writes a float tensor (empty: integer-only)."""
    from .runner.runners import tflite_backend

    interp_cls, _, _ = tflite_backend()
    interp = interp_cls(model_path=str(path))
    dtypes = {d["index"]: np.dtype(d["dtype"]) for d in interp.get_tensor_details()}
    names = {d["index"]: d["name"] for d in interp.get_tensor_details()}
    found = []
    for op in interp._get_ops_details():  # the interpreter's own op list: names and tensor indices
        tensors = [int(t) for t in list(op["inputs"]) + list(op["outputs"]) if int(t) >= 0]
        if any(dtypes[t].kind not in INTEGER_KINDS for t in tensors if t in dtypes):
            outs = [int(t) for t in op["outputs"] if int(t) >= 0]
            found.append(FloatOp(op["op_name"], names.get(outs[0], "?") if outs else "?"))
    return found


def describe(ops: List[FloatOp], limit: int = 6) -> str:
    """One line naming the float ops (compute ops first, with where they sit), then the conversions."""
    compute = [o for o in ops if o.op not in CONVERSION_OPS]
    conv = Counter(o.op for o in ops if o.op in CONVERSION_OPS)
    parts = [f"{o.op} (at {o.output})" for o in compute[:limit]]
    if len(compute) > limit:
        parts.append(f"and {len(compute) - limit} more")
    text = "float ops: " + ", ".join(parts) if parts else "float tensors"
    if conv:
        text += "; float conversions: " + ", ".join(f"{op} x{n}" for op, n in sorted(conv.items()))
    return text


def io_dtypes(path: Path) -> List[str]:
    """Dtypes of the model's inputs then outputs, as the interpreter reports them."""
    from .runner.runners import tflite_backend

    interp_cls, _, _ = tflite_backend()
    interp = interp_cls(model_path=str(path))
    return [np.dtype(d["dtype"]).name for d in interp.get_input_details() + interp.get_output_details()]
