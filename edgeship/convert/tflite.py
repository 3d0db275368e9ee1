"""Keras -> TFLite/LiteRT with TFLiteConverter, one branch per recipe."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, List, Optional

import numpy as np

from ..errors import ConversionError, UsageError
from ..sources import Dataset, Source
from ..targets import TargetProfile
from .tf_graph import keras_function


def representative(source: Source, dataset: Dataset) -> Any:
    """Calibration samples one at a time, in the function's input order."""

    def gen() -> Iterator[List[np.ndarray]]:
        n = len(next(iter(dataset.calibration.values())))
        for i in range(n):
            yield [dataset.calibration[inp.name][i : i + 1].astype(np.float32) for inp in source.inputs]

    return gen


def converter_for(source: Source) -> Any:
    import tensorflow as tf

    if source.kind != "keras":
        raise UsageError(f"TFLite conversion from a {source.kind} model is not supported")
    fn, _ = keras_function(source)
    # Freeze variables into constants: the calibrator cannot read resource variables.
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    frozen = convert_variables_to_constants_v2(fn.get_concrete_function())
    return tf.lite.TFLiteConverter.from_concrete_functions([frozen])


def convert(source: Source, recipe: str, path: Path, dataset: Optional[Dataset], profile: TargetProfile) -> List[str]:
    import tensorflow as tf

    conv = converter_for(source)
    notes: List[str] = []
    if recipe == "fp16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif recipe == "dynamic":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    elif recipe in ("int8", "int8_strict"):
        if dataset is None:
            raise UsageError(f"recipe {recipe} needs calibration data: pass --data")
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative(source, dataset)
        ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if recipe == "int8":
            ops.append(tf.lite.OpsSet.TFLITE_BUILTINS)  # float fallback for ops with no int8 kernel
        conv.target_spec.supported_ops = ops
        io = {"float32": tf.float32, "int8": tf.int8, "uint8": tf.uint8}
        conv.inference_input_type = io[profile.io.input_dtype]
        conv.inference_output_type = io[profile.io.output_dtype]
        notes.append(
            f"per-channel int8, calibrated on {len(next(iter(dataset.calibration.values())))} samples "
            f"({'generated' if dataset.generated else 'real'}); I/O {profile.io.input_dtype}/{profile.io.output_dtype}"
        )
    elif recipe != "fp32":
        raise UsageError(f"recipe {recipe} has no TFLite conversion")
    try:
        flat = conv.convert()
    except Exception as e:
        msg = str(e)
        if recipe == "int8_strict":
            raise ConversionError(
                f"the model cannot be made integer-only: {_ops_in(msg) or msg.splitlines()[-1][:300]}"
            ) from e
        raise
    path.write_bytes(flat)
    return notes


def _ops_in(message: str) -> str:
    """The op names from a converter error, e.g. 'ops without int8 kernels: tfl.exp at dense/...'."""
    import re

    lines = [l.strip() for l in message.splitlines() if "op" in l.lower() and ("int8" in l.lower() or "quantiz" in l.lower())]
    found = sorted(set(re.findall(r"'(tfl\.[a-z_0-9]+)'", message)))
    if found:
        return "ops that have no integer kernel: " + ", ".join(found)
    return lines[0][:300] if lines else ""
