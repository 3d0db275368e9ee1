"""Keras/SavedModel -> TFLite/LiteRT with TFLiteConverter, one branch per recipe.

A TFLite source is passed through for its own recipe only (its float weights are gone).
ONNX and torch sources go through onnx2tf (its own environment, see onnx2tf.py) to a SavedModel first.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any, Iterator, List, Optional, Tuple

import numpy as np

from ..errors import ConversionError, UnsupportedOps, UsageError
from ..recipes import RECIPES
from ..sources import Dataset, Source
from ..targets import TargetProfile
from . import Skipped
from .tf_graph import TF_KINDS, tf_function


def feed_dtype(x: np.ndarray) -> np.ndarray:
    """Floats as float32; integer inputs (token ids) keep their own dtype, never cast to float."""
    x = np.asarray(x)
    return x if x.dtype.kind in "iub" else x.astype(np.float32)


def representative(source: Source, dataset: Dataset) -> Any:
    """Calibration samples one at a time, in the function's input order."""

    def gen() -> Iterator[List[np.ndarray]]:
        n = len(next(iter(dataset.calibration.values())))
        for i in range(n):
            yield [feed_dtype(dataset.calibration[inp.name][i : i + 1]) for inp in source.inputs]

    return gen


def converter_for(source: Source) -> Any:
    """A TFLiteConverter for a Keras model or a SavedModel signature."""
    return frozen_converter(source)[0]


def frozen_converter(source: Source) -> Tuple[Any, Any]:
    """(TFLiteConverter, frozen concrete function): the graph names the layer of an op TFLite lacks."""
    import tensorflow as tf

    if source.kind in ("onnx", "torch"):
        from .onnx2tf import tf_source

        if "_tf_source" not in source.__dict__:  # loaded once: its frozen function is then cached too
            source.__dict__["_tf_source"] = tf_source(source)
        source = source.__dict__["_tf_source"]
    if source.kind not in TF_KINDS:
        raise UsageError(f"TFLite conversion from a {source.kind} model is not supported")
    frozen = frozen_function(source)
    return tf.lite.TFLiteConverter.from_concrete_functions([frozen]), frozen


def frozen_function(source: Source) -> Any:
    """The source traced and frozen once per build: every TFLite recipe and the diagnosis share it.

    Tracing and freezing cost seconds on large models (ResNet50: 2.3 s) and were repeated per recipe;
    the frozen graph is immutable, and each converter is a fresh object around it.
    """
    cached = source.__dict__.get("_frozen_function")
    if cached is not None:
        return cached
    fn, _ = tf_function(source)
    # Freeze variables into constants: the calibrator cannot read resource variables.
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    frozen = convert_variables_to_constants_v2(fn.get_concrete_function())
    source.__dict__["_frozen_function"] = frozen
    return frozen


BATCH_ONE_NOTE = (
    "input batch fixed to 1: TFLite lowers recurrent layers (LSTM, GRU) to its fused kernels only with a "
    "static batch (a dynamic one leaves TensorList ops it has no kernel for)"
)


def convert(source: Source, recipe: str, path: Path, dataset: Optional[Dataset], profile: TargetProfile) -> List[str]:
    try:
        return _convert(source, recipe, path, dataset, profile)
    except (UnsupportedOps, ConversionError) as e:
        fixed = _batch_one(source)
        if "TensorList" not in str(e) or fixed is None:
            raise
    if RECIPES[recipe].needs_calibration:  # measured: TF 2.21's calibrator segfaults on fused LSTM/GRU kernels
        raise ConversionError(
            f"{source.name} cannot be converted to TFLite {recipe}: its recurrent layers{_recurrent_layers(source)} become "
            "fused LSTM/GRU kernels that TFLite's int8 calibrator cannot quantize (it crashes); use the fp32, fp16 or "
            "dynamic TFLite artifact, or the ONNX int8 one"
        )
    return _convert(fixed, recipe, path, dataset, profile) + [BATCH_ONE_NOTE]


def _recurrent_layers(source: Source) -> str:
    layers = getattr(source.model, "layers", None) or []
    names = [f"{type(layer).__name__} '{layer.name}'" for layer in layers if type(layer).__name__ in ("LSTM", "GRU", "SimpleRNN", "RNN", "Bidirectional")]
    return f" ({', '.join(names[:5])})" if names else ""


def _batch_one(source: Source) -> Optional[Source]:
    """The same Keras/SavedModel source with a batch of 1 where the batch was dynamic, or None."""
    import dataclasses

    if source.kind not in TF_KINDS or not any(i.shape and i.shape[0] is None for i in source.inputs):
        return None
    inputs = [dataclasses.replace(i, shape=[1, *i.shape[1:]]) if i.shape and i.shape[0] is None else i for i in source.inputs]
    return dataclasses.replace(source, inputs=inputs)


def _convert(source: Source, recipe: str, path: Path, dataset: Optional[Dataset], profile: TargetProfile) -> List[str]:
    import tensorflow as tf

    if source.kind == "tflite":
        if recipe != source.recipe:
            raise Skipped(
                f"{source.path.name} is already a {source.recipe} TFLite file: re-quantizing it to {recipe} is impossible "
                "(its float weights are gone); convert the original model instead"
            )
        shutil.copyfile(source.path, path)
        return [f"the given {source.recipe} TFLite file, unchanged"]
    conv, frozen = frozen_converter(source)
    notes: List[str] = []
    if source.kind in ("onnx", "torch"):
        from .onnx2tf import VERSION

        notes.append(f"from the ONNX graph through onnx2tf {VERSION} (inputs keep the ONNX layout), then TFLiteConverter")
    if recipe == "fp16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
        notes.append("float16 weights, float32 I/O: GPU delegates compute in float16; CPU kernels dequantize the weights to float32")
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
        from .calibration import fingerprint, memo_for, shared

        calibrating = RECIPES[recipe].needs_calibration and dataset is not None
        with shared(memo_for(source) if calibrating else None, fingerprint(dataset.calibration) if calibrating else ""):
            flat = conv.convert()  # the calibration is kept for the per-layer diagnosis
    except Exception as e:
        unsupported = _unsupported_ops(str(e), frozen)
        if unsupported:  # no kernel at all in TFLite: the model is the problem (exit 2), named with its layer
            raise UnsupportedOps(f"{source.name} cannot be converted to TFLite {recipe}: {unsupported}") from None
        named = _ops_in(str(e))
        if named:
            raise ConversionError(f"{source.name} cannot be converted to TFLite {recipe}: {named}") from e
        raise
    path.write_bytes(flat)
    _name_outputs(path, source)
    if RECIPES[recipe].integer_only:
        _require_integer_only(source.name, recipe, path)
        notes.append("integer-only: every op and tensor in the file checked (int8/uint8/int32, no float fallback)")
    return notes


def _name_outputs(path: Path, source: Source) -> None:
    """Give the outputs the model's names: TFLite calls them Identity, Identity_1, ... in the
    graph's flattened (sorted-key) order, which pairs them wrongly by position with several outputs."""
    import tensorflow as tf
    from tensorflow.lite.tools import flatbuffer_utils as fb

    names = tf.nest.flatten({o.name: o.name for o in source.outputs})
    model = fb.read_model(str(path))
    sg = model.subgraphs[0]
    outputs = set(sg.outputs)
    taken = {t.name for i, t in enumerate(sg.tensors) if i not in outputs}
    if len(sg.outputs) != len(names) or any(n.encode() in taken for n in names):
        return
    for idx, name in zip(sg.outputs, names):
        sg.tensors[idx].name = name.encode()
    fb.write_model(model, str(path))


def _require_integer_only(model: str, recipe: str, path: Path) -> None:
    """Fail, naming the ops, when the converter kept float ops in a model that must be integer-only."""
    from ..integer_only import describe, float_ops

    ops = float_ops(path)
    if ops:
        path.unlink()
        raise ConversionError(
            f"{model} cannot be made integer-only ({recipe}): {describe(ops)}; these ops have no integer kernel "
            "in TFLite: replace them in the model, or build for a CPU target whose int8 recipe allows float fallback"
        )


def _unsupported_ops(message: str, frozen: Any) -> str:
    """'ops TFLite has no builtin kernel for: Igamma (at layer functional/weird_1); ...' or ''."""
    m = re.search(r"(?:Custom|Flex|TF Select) ops: ([\w, ]+)", message)
    if not m:
        m = re.search(r"'tf\.(\w+)' op is neither a custom op nor a flex op", message)
    if not m:
        return ""
    ops = [o.strip() for o in m.group(1).split(",") if o.strip()]
    nodes = [n.name.replace("StatefulPartitionedCall/", "") for n in frozen.graph.as_graph_def().node if n.op in ops]
    where = ", ".join(f"{n.rsplit('/', 1)[-1]} in layer {n.rsplit('/', 1)[0]}" if "/" in n else n for n in nodes[:5])
    return (
        f"ops TFLite has no builtin kernel for: {', '.join(ops)} ({where or 'location unknown'}); "
        "replace that layer with standard ops (TF Select/Flex kernels are not carried by edge runtimes)"
    )


def _ops_in(message: str) -> str:
    """The ops a converter error names, e.g. "ops TFLite has no builtin kernel for: Erf (needs TF Select)"."""
    import re

    select = re.search(r"TF Select ops: ([^\n]+)", message)
    if select:
        return (
            f"ops TFLite has no builtin kernel for: {select.group(1).strip()} (they would need TF Select/Flex, "
            "which edge runtimes do not carry)"
        )
    found = sorted(set(re.findall(r"'(tfl?\.[A-Za-z_0-9]+)' op", message)))
    if found:
        return "unsupported ops: " + ", ".join(found)
    return ""
