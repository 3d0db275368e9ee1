"""Sources: a loaded model with its I/O signature and the reference outputs of its own framework.

The reference is always the original framework (Keras/TF for Keras models), never a
converted artifact, so parity measures what conversion changed.
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from .errors import UsageError


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_tree(path: Path) -> str:
    """A file's sha256, or a directory's (SavedModel) over its sorted relative paths and contents."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        h.update(str(p.relative_to(path)).encode())
        h.update(sha256_file(p).encode())
    return h.hexdigest()


@dataclass
class TensorSpec:
    name: str
    shape: List[Optional[int]]  # None for a dynamic dimension (batch first)
    dtype: str = "float32"

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


@dataclass
class Dataset:
    """Samples in the model's input layout: calibration and held-out parity sets never overlap."""

    calibration: Dict[str, np.ndarray]
    heldout: Dict[str, np.ndarray]
    labels: Optional[np.ndarray]
    origin: str
    class_names: Optional[List[str]] = None
    preprocessing: Optional[Dict[str, Any]] = None
    generated: bool = False

    @property
    def n_heldout(self) -> int:
        return len(next(iter(self.heldout.values())))

    def first(self, n: int = 1) -> Dict[str, np.ndarray]:
        return {k: v[:n] for k, v in self.heldout.items()}


@dataclass
class Source:
    """A model in its own framework. ``kind`` says which; converters dispatch on it."""

    name: str
    kind: str  # "keras" for now; the converters know each kind
    path: Optional[Path]
    sha256: str
    inputs: List[TensorSpec]
    outputs: List[TensorSpec]
    model: Any = None  # the framework object (a keras.Model for kind == "keras")
    info: Dict[str, Any] = field(default_factory=dict)

    def predict(self, feed: Dict[str, np.ndarray], batch_size: int = 256) -> Dict[str, np.ndarray]:
        """Reference outputs, computed by the original framework."""
        if self.kind != "keras":
            raise NotImplementedError(self.kind)
        x = [feed[i.name] for i in self.inputs]
        ys = self.model.predict(x if len(x) > 1 else x[0], batch_size=batch_size, verbose=0)
        if not isinstance(ys, (list, tuple)):
            ys = [ys]
        return {o.name: np.asarray(y, dtype=np.float32) for o, y in zip(self.outputs, ys)}

    def describe(self) -> Dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "path": str(self.path) if self.path else None,
            "sha256": self.sha256,
            "inputs": [i.to_dict() for i in self.inputs],
            "outputs": [o.to_dict() for o in self.outputs],
            **self.info,
        }


def keras_source(model: Any, name: str, path: Optional[Path], sha256: str, **info: Any) -> Source:
    inputs = [
        TensorSpec(t.name.split(":")[0], [None if d is None else int(d) for d in t.shape], "float32")
        for t in model.inputs
    ]
    outputs = [
        TensorSpec(n, [None if d is None else int(d) for d in t.shape], "float32")
        for n, t in zip(model.output_names, model.outputs)
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
