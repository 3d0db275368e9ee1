"""TensorFlow SavedModel folders: one serving signature, called by TensorFlow for the reference."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

from ..errors import UsageError
from . import Source, TensorSpec, sha256_tree
from .load import InputShapes, check_shape_names, first_line

DEFAULT_SIGNATURE = "serving_default"


def load_savedmodel(path: Path, signature: Optional[str], shapes: InputShapes) -> Source:
    """Load ``path`` and pick its signature: the only one, else serving_default, else --signature."""
    import tensorflow as tf

    path = Path(path)
    if not (path / "saved_model.pb").is_file() and not (path / "saved_model.pbtxt").is_file():
        raise UsageError(f"{path} is a folder but not a TensorFlow SavedModel (no saved_model.pb in it)")
    try:
        obj = tf.saved_model.load(str(path))
    except Exception as e:
        raise UsageError(f"cannot load SavedModel {path}: {first_line(e)} (is the folder complete?)") from None
    sigs = dict(getattr(obj, "signatures", {}) or {})
    if not sigs:
        raise UsageError(f"SavedModel {path} has no signatures: export it with model.export() or tf.saved_model.save(..., signatures=...)")
    if signature is not None:
        if signature not in sigs:
            raise UsageError(f"SavedModel {path} has no signature '{signature}'; it has: {', '.join(sorted(sigs))}")
        name = signature
    elif len(sigs) == 1:
        name = next(iter(sigs))
    elif DEFAULT_SIGNATURE in sigs:
        name = DEFAULT_SIGNATURE
    else:
        raise UsageError(f"SavedModel {path} has several signatures ({', '.join(sorted(sigs))}): choose one with --signature NAME")
    fn = sigs[name]
    _, kwargs = fn.structured_input_signature
    inputs = [
        TensorSpec(k, [None if d is None else int(d) for d in v.shape.as_list()], v.dtype.name)
        for k, v in sorted(kwargs.items())
    ]
    check_shape_names([i.name for i in inputs], shapes)
    outs = fn.structured_outputs
    if not isinstance(outs, dict):
        raise UsageError(f"signature '{name}' of {path} returns {type(outs).__name__}, not named outputs")
    outputs = [TensorSpec(k, [None if d is None else int(d) for d in v.shape.as_list()], v.dtype.name) for k, v in sorted(outs.items())]

    def reference(feed: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        res = fn(**{i.name: tf.constant(feed[i.name], dtype=i.dtype) for i in inputs})
        return {k: np.asarray(v.numpy(), np.float32) for k, v in res.items()}

    return Source(
        path.name or path.resolve().name,
        "savedmodel",
        path,
        sha256_tree(path),
        inputs,
        outputs,
        model=obj,
        reference=reference,
        info={"signature": name, "signatures": sorted(sigs)},
    )


def signature_function(source: Source) -> Any:
    """The chosen signature's concrete function (the object keeps its variables alive)."""
    return source.model.signatures[source.info["signature"]]
