"""Quantization recipes as values, so a build (or a later recipe search) can enumerate them."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Tuple

FORMATS: Tuple[str, ...] = ("tflite", "onnx")


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    needs_calibration: bool = False
    integer_only: bool = False
    keep_float: Tuple[str, ...] = field(default_factory=tuple)


RECIPES: Dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe("fp32", "float32, no quantization"),
        Recipe("fp16", "float16 weights (GPU delegates, CUDA/TensorRT)"),
        Recipe("dynamic", "int8 weights, float activations (no calibration)"),
        Recipe("int8", "full int8, per-channel weights, activations calibrated on real samples", needs_calibration=True),
        Recipe(
            "int8_strict",
            "integer-only int8 for NPUs: no float fallback ops, integer input and output",
            needs_calibration=True,
            integer_only=True,
        ),
    )
}
