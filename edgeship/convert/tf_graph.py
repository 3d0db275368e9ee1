"""A Keras model as a tf.function with an explicit input signature.

Both converters start here: tf2onnx's from_keras fails on Keras 3 models, while
from_function on this wrapper works, and TFLite converts its concrete function.
"""
from __future__ import annotations

from typing import Any, Tuple

from ..sources import Source


def keras_function(source: Source) -> Tuple[Any, list]:
    import tensorflow as tf

    model = source.model
    spec = [tf.TensorSpec(i.shape, tf.float32, name=i.name) for i in source.inputs]

    @tf.function(input_signature=spec)
    def serve(*args: Any) -> Any:
        y = model(list(args) if len(args) > 1 else args[0], training=False)
        ys = y if isinstance(y, (list, tuple)) else [y]
        return {o.name: t for o, t in zip(source.outputs, ys)}

    return serve, spec
