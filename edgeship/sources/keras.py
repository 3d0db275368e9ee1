"""Keras models: .keras files and legacy .h5 (HDF5) files, loaded with keras.models.load_model."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from ..errors import UsageError
from . import Source, TensorSpec, sha256_file


def keras_source(model: Any, name: str, path: Optional[Path], sha256: str, **info: Any) -> Source:
    inputs = [
        TensorSpec(t.name.split(":")[0], [None if d is None else int(d) for d in t.shape], _dtype(t))
        for t in model.inputs
    ]
    outputs = [
        TensorSpec(n, [None if d is None else int(d) for d in t.shape], "float32")
        for n, t in zip(_output_names(model), model.outputs)
    ]
    return Source(name, "keras", path, sha256, inputs, outputs, model=model, info=info)


def _output_names(model: Any) -> list:
    """Keras 3's Sequential has no ``output_names``: name each output after the layer that makes it."""
    names = getattr(model, "output_names", None)
    if names:
        return list(names)
    out = []
    for t in model.outputs:
        hist = getattr(t, "_keras_history", None)
        out.append(hist[0].name if hist else t.name.split(":")[0])
    return out


def _dtype(t: Any) -> str:
    """The input's own dtype: token ids stay integers (never cast to float on the way in)."""
    d = str(getattr(t, "dtype", "float32") or "float32")
    d = d.rsplit(".", 1)[-1].replace("'>", "")
    return d if d in ("int8", "uint8", "int16", "int32", "int64", "bool") else "float32"


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
