"""Any source -> ONNX fp32 (tf2onnx for Keras/SavedModel, the file itself for ONNX and torch
exports), then the recipe through ``quantize``; TFLite files are not converted to ONNX."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..errors import UnsupportedOps, UsageError
from . import Skipped
from ..quantize import quantize_onnx
from ..sources import Dataset, Source
from ..targets import TargetProfile
from .tf_graph import TF_KINDS, tf_function

OPSET = 17


_FP32: Dict[str, bytes] = {}  # source sha256 (+ signature) -> exported bytes: one export serves every ONNX recipe


def export_fp32(source: Source, path: Path) -> None:
    if source.onnx_path is not None:  # ONNX (shapes fixed) and torch exports: already ONNX
        shutil.copyfile(source.onnx_path, path)
        return
    key = f"{source.sha256}:{source.info.get('signature', '')}"  # a SavedModel's signatures share one sha256
    cached = _FP32.get(key)
    if cached is not None:
        path.write_bytes(cached)
        return
    _export(source, path)
    _FP32[key] = path.read_bytes()


def _export(source: Source, path: Path) -> None:
    if source.kind in TF_KINDS:
        import tf2onnx

        fn, spec = tf_function(source)
        model = _from_function(fn, spec, path)
        _check_standard_ops(model)
        return
    if source.kind == "tflite":
        raise Skipped(
            f"a TFLite file is not converted to ONNX: its quantization is baked in (recipe {source.recipe}); "
            "build ONNX from the original model instead"
        )
    raise UsageError(f"ONNX conversion from a {source.kind} model is not supported")


_ERFC: List[bool] = []


def _register_erfc() -> None:
    """tf2onnx 1.17 has no handler for Erfc, which exact GELU (keras.activations.gelu, every
    Transformer MLP) lowers to in TF 2.21: map it to 1 - Erf(x) (Erf is standard ONNX since opset 9)."""
    if _ERFC:
        return
    import numpy as np
    from tf2onnx import utils
    from tf2onnx.handler import tf_op

    class Erfc:
        @classmethod
        def version_9(cls, ctx: Any, node: Any, **kwargs: Any) -> None:
            x = node.input[0]
            erf = ctx.make_node("Erf", [x], op_name_scope=node.name)
            one = ctx.make_const(utils.make_name(f"{node.name}_one"), np.array(1, utils.map_onnx_to_numpy_type(ctx.get_dtype(x))))
            node.type = "Sub"
            ctx.replace_inputs(node, [one.output[0], erf.output[0]])

    tf_op("Erfc")(Erfc)
    _ERFC.append(True)


def _from_function(fn: Any, spec: list, path: Path) -> Any:
    """tf2onnx's ``convert.from_function`` (pinned 1.17), except that only the signature's own tensors
    become graph inputs.

    tf2onnx takes every non-resource input of the concrete function as a model input, captured
    constants included: Keras 3 keeps a Normalization layer's mean and variance (EfficientNet,
    preprocessing inside a model) as captured tensors, which then turned into extra ONNX inputs
    (``.../normalization/Sub/y:0``) that no feed has. Freezing inlines them as constants.
    """
    import tensorflow as tf
    from tf2onnx import convert as tc, tf_loader

    _register_erfc()
    concrete = fn.get_concrete_function(*spec)
    args = [t for t in concrete.inputs if t.dtype != tf.dtypes.resource][: len(spec)]  # captures come after the arguments
    input_names = [t.name for t in args]
    output_names = [t.name for t in concrete.outputs if t.dtype != tf.dtypes.resource]
    renames = tc.tensor_names_from_structed(concrete, input_names, output_names)
    with tf.device("/cpu:0"):
        frozen = tf_loader.from_function(concrete, input_names, output_names)
        model, _ = tc._convert_common(
            frozen, name=concrete.name, continue_on_error=True, opset=OPSET, input_names=input_names,
            output_names=output_names, tensors_to_rename=renames, output_path=str(path),
        )
    return model


QDQ_MIN_OPSET = 13  # per-channel QuantizeLinear/DequantizeLinear (the axis attribute) need opset 13


def _upgrade_opset(path: Path) -> List[str]:
    """Older models (opset < 13) are upgraded with onnx's version converter before quantizing."""
    import onnx
    from onnx import version_converter

    model = onnx.load(str(path))
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=QDQ_MIN_OPSET)
    if opset >= QDQ_MIN_OPSET:
        return []
    onnx.save(version_converter.convert_version(model, QDQ_MIN_OPSET), str(path))
    return [f"opset {opset} upgraded to {QDQ_MIN_OPSET} for per-channel QDQ"]


def _check_standard_ops(model: Any) -> None:
    """tf2onnx logs TF ops it cannot map and leaves them in the graph: name them and their layer."""
    import onnx

    bad = [n for n in model.graph.node if n.domain in ("", "ai.onnx") and not onnx.defs.has(n.op_type)]
    if bad:
        where = ", ".join(f"{n.op_type} at {n.name.rsplit('/', 1)[0] or n.name}" for n in bad[:5])
        raise UnsupportedOps(
            f"the model uses TensorFlow ops that have no ONNX equivalent ({where}); replace that layer with standard ops"
        )


def convert(source: Source, recipe: str, path: Path, dataset: Optional[Dataset], profile: TargetProfile) -> List[str]:
    if recipe == "fp32":
        export_fp32(source, path)
        return []
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        export_fp32(source, fp32)
        notes = _upgrade_opset(fp32)
        return notes + quantize_onnx(fp32, recipe, path, dataset, reduce_range=profile.runtime.reduce_range)
