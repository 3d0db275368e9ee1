"""A Keras model or a SavedModel signature as a tf.function with an explicit input signature.

Both converters start here: tf2onnx's from_keras fails on Keras 3 models, while
from_function on this wrapper works, and TFLite converts its concrete function.
"""
from __future__ import annotations

from typing import Any, Tuple

from ..sources import Source

TF_KINDS = ("keras", "savedmodel")


def tf_function(source: Source) -> Tuple[Any, list]:
    """(tf.function, input signature) whose outputs are a dict named like ``source.outputs``."""
    import tensorflow as tf

    spec = [tf.TensorSpec(i.shape, tf.dtypes.as_dtype(i.dtype), name=i.name) for i in source.inputs]
    if source.kind == "savedmodel":
        from ..sources.savedmodel import signature_function

        sig = signature_function(source)
        # onnx2tf's SavedModels name outputs output_0..n and may return them channels-last.
        keys = source.info.get("output_keys", {})
        perms = source.info.get("output_perms", {})

        def output(res: Any, name: str) -> Any:
            t = res[keys.get(name, name)]
            return tf.transpose(t, perms[name]) if name in perms else t

        @tf.function(input_signature=spec)
        def serve_signature(*args: Any) -> Any:
            res = sig(**{i.name: a for i, a in zip(source.inputs, args)})
            return {o.name: output(res, o.name) for o in source.outputs}

        return serve_signature, spec
    model = source.model

    @tf.function(input_signature=spec)
    def serve(*args: Any) -> Any:
        y = model(list(args) if len(args) > 1 else args[0], training=False)
        ys = y if isinstance(y, (list, tuple)) else [y]
        return {o.name: t for o, t in zip(source.outputs, ys)}

    return serve, spec

