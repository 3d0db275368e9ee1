"""Which loader a model argument needs: by its suffix, a SavedModel folder, or pkg.module:factory."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ..errors import UsageError
from . import Source

FORMATS_HELP = ".keras, .h5, .onnx or .tflite file, a SavedModel folder, or pkg.module:factory (PyTorch, with --weights)"
_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")

# Input shapes given by the user: {input name or None for "the only input": [dims]}.
InputShapes = Dict[Optional[str], List[int]]


def parse_input_shapes(values: Sequence[str]) -> InputShapes:
    """``NAME:1x3x224x224`` or ``1x3x224x224`` (the only input); commas work as separators too."""
    out: InputShapes = {}
    for v in values:
        name, _, dims = v.rpartition(":") if ":" in v else ("", "", v)
        try:
            shape = [int(d) for d in re.split(r"[x,]", dims.strip().lower()) if d]
        except ValueError:
            shape = []
        if not shape or any(d <= 0 for d in shape):
            raise UsageError(f"bad --input-shape {v!r}: expected NAME:1x3x224x224 (positive integers, batch first)")
        out[name or None] = shape
    return out


def shape_for(name: str, n_inputs: int, shapes: InputShapes) -> Optional[List[int]]:
    if name in shapes:
        return shapes[name]
    if None in shapes and n_inputs == 1:
        return shapes[None]
    return None


def check_shape_names(source_inputs: Sequence[str], shapes: InputShapes) -> None:
    unknown = [n for n in shapes if n is not None and n not in source_inputs]
    if unknown:
        raise UsageError(f"--input-shape names {', '.join(unknown)}, but the model's inputs are: {', '.join(source_inputs)}")
    if None in shapes and len(source_inputs) > 1:
        raise UsageError(f"the model has {len(source_inputs)} inputs ({', '.join(source_inputs)}): name each in --input-shape NAME:DIMS")


def load_model(
    model: str,
    weights: Optional[str] = None,
    signature: Optional[str] = None,
    input_shapes: Optional[InputShapes] = None,
) -> Source:
    """Load ``model`` with the loader of its format; every failure is one UsageError line."""
    shapes = dict(input_shapes or {})
    path = Path(model)
    if not path.exists() and _FACTORY.match(model):
        from .torch import load_torch

        return load_torch(model, weights, shapes)
    if not path.exists():
        raise UsageError(f"model not found: {model} (expected a {FORMATS_HELP})")
    if weights is not None:
        raise UsageError("--weights is for PyTorch models given as --model pkg.module:factory")
    if path.is_dir():
        from .savedmodel import load_savedmodel

        return load_savedmodel(path, signature, shapes)
    if signature is not None:
        raise UsageError("--signature chooses a signature of a SavedModel folder; this model is a file")
    suffix = path.suffix.lower()
    if suffix in (".keras", ".h5", ".hdf5"):
        from .keras import load_keras

        src = load_keras(path)
        check_shape_names([i.name for i in src.inputs], shapes)
        return src
    if suffix == ".onnx":
        from .onnx import load_onnx

        return load_onnx(path, shapes)
    if suffix == ".tflite":
        from .tflite import load_tflite

        return load_tflite(path)
    if suffix in (".pt", ".pth"):
        raise UsageError(f"{model} holds PyTorch weights: give the module with --model pkg.module:factory --weights {model}")
    raise UsageError(f"unsupported model file {model}: expected a {FORMATS_HELP}")


def first_line(e: BaseException, limit: int = 240) -> str:
    """The first non-empty line of an exception's message (libraries put the gist there)."""
    for line in str(e).splitlines():
        if line.strip():
            return line.strip()[:limit]
    return type(e).__name__
