"""Sources: a loaded model with its I/O signature and the reference outputs of its own framework.

The reference is always the original framework (Keras/TF for Keras and SavedModel, fp32
onnxruntime for ONNX, the file itself for TFLite, torch for PyTorch), never a converted
artifact, so parity measures what conversion changed. One module per format loads it
(keras.py, savedmodel.py, onnx.py, tflite.py, torch.py); ``load.load_model`` picks one.
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np



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
    kind: str  # keras | savedmodel | onnx | tflite | torch: the converters dispatch on it
    path: Optional[Path]
    sha256: str
    inputs: List[TensorSpec]
    outputs: List[TensorSpec]
    model: Any = None  # the framework object (a keras.Model for kind == "keras")
    info: Dict[str, Any] = field(default_factory=dict)
    # The original framework's forward pass, float feed -> float outputs (all kinds but keras).
    reference: Optional[Callable[[Dict[str, np.ndarray]], Dict[str, np.ndarray]]] = None
    onnx_path: Optional[Path] = None  # fp32 ONNX with fixed shapes (onnx and torch sources)
    recipe: Optional[str] = None  # tflite sources: the recipe the file was already built with

    def predict(self, feed: Dict[str, np.ndarray], batch_size: int = 32) -> Dict[str, np.ndarray]:
        """Reference outputs, computed by the original framework."""
        if self.kind != "keras":
            if self.reference is None:
                raise NotImplementedError(self.kind)
            n = len(next(iter(feed.values())))
            parts = [self.reference({k: v[i : i + batch_size] for k, v in feed.items()}) for i in range(0, n, batch_size)]
            return {o.name: np.concatenate([np.asarray(p[o.name], np.float32) for p in parts]) for o in self.outputs}
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
            **({"recipe": self.recipe} if self.recipe else {}),
            **self.info,
        }


_WORKDIR: List[str] = []


def workdir() -> Path:
    """A private folder for files a loader derives (fixed-shape ONNX, torch exports), removed at exit."""
    if not _WORKDIR:
        import atexit
        import shutil
        import tempfile

        _WORKDIR.append(tempfile.mkdtemp(prefix="edgeship-source-"))
        atexit.register(shutil.rmtree, _WORKDIR[0], True)
    return Path(_WORKDIR[0])


def guess_layout(shape: List[Optional[int]]) -> str:
    """NCHW when a 4-D input has 1/3/4 channels second and not last (PyTorch, Paddle); else NHWC."""
    if len(shape) == 4 and shape[1] in (1, 3, 4) and shape[3] not in (1, 3, 4):
        return "NCHW"
    return "NHWC"


def __getattr__(name: str) -> Any:
    """``keras_source`` and ``load_keras`` moved to sources/keras.py; still importable from here."""
    if name in ("keras_source", "load_keras"):
        from . import keras as _keras

        return getattr(_keras, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
