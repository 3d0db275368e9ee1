"""Keras models: .keras files and legacy .h5 (HDF5) files, loaded with keras.models.load_model."""
from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

from ..errors import UsageError
from . import Source, TensorSpec, sha256_file


def output_names(model: Any) -> List[str]:
    """Keras 3's Sequential (and subclassed models) have no ``output_names``: name each output after its layer."""
    names = getattr(model, "output_names", None)
    if names and len(names) == len(model.outputs):
        return [str(n) for n in names]
    out: List[str] = []
    for i, t in enumerate(model.outputs):
        history = getattr(t, "_keras_history", None)
        name = getattr(history[0], "name", None) if history else None
        name = str(name or f"output_{i}")
        out.append(name if name not in out else f"{name}_{i}")
    return out


def _dtype(t: Any) -> str:
    """The input's own dtype (an Embedding model takes integer ids); anything unknown is float32."""
    import numpy as np

    try:
        return np.dtype(str(getattr(t.dtype, "name", t.dtype))).name
    except TypeError:
        return "float32"


def keras_source(model: Any, name: str, path: Optional[Path], sha256: str, **info: Any) -> Source:
    try:
        has_inputs = bool(model.inputs)
    except Exception:  # an unbuilt Sequential raises rather than answering []
        has_inputs = False
    if not has_inputs:
        raise UsageError(
            f"Keras model {name} has no inputs: it was saved before it was built; build it "
            "(add keras.Input(shape) first, or call it on a batch) and save it again"
        )
    inputs = [TensorSpec(t.name.split(":")[0], [None if d is None else int(d) for d in t.shape], _dtype(t)) for t in model.inputs]
    outputs = [
        TensorSpec(n, [None if d is None else int(d) for d in t.shape], "float32")
        for n, t in zip(output_names(model), model.outputs)
    ]
    return Source(name, "keras", path, sha256, inputs, outputs, model=model, info=info)


def load_keras(path: Path) -> Source:
    """A user's .keras or .h5 file."""
    import keras  # heavy: imported only when a model is loaded

    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as e:  # Keras raises many types for corrupt files
        raise UsageError(
            f"cannot load Keras model {path}: {str(e).splitlines()[0][:200]} "
            "(is the file complete and saved with model.save()?)"
        ) from None
    return keras_source(model, Path(path).stem, Path(path), sha256_file(path))
