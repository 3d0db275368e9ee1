"""One runner class per runtime, one interface; callers always speak float.

This module must stay importable with only NumPy and one runtime installed (it is
shipped to devices inside every bundle): no TensorFlow at import time, no Click, no
edgeship imports.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

Feed = Dict[str, np.ndarray]


class RuntimeMissing(RuntimeError):
    """No runtime able to open this artifact is installed; carries the pip line that fixes it."""

    def __init__(self, fmt: str, tried: Sequence[str], install: str) -> None:
        self.fmt = fmt
        self.tried = list(tried)
        self.install = install
        super().__init__(
            f"no {fmt} runtime is installed (tried {', '.join(tried)}); install one with: {install}"
        )


@dataclass
class TensorInfo:
    """An input or output as the artifact declares it, with its quantization if any."""

    name: str
    shape: List[int]
    dtype: str
    scale: float = 0.0
    zero_point: int = 0

    @property
    def quantized(self) -> bool:
        return self.scale != 0.0 and np.dtype(self.dtype).kind in "iu"

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def quantize(x: np.ndarray, info: TensorInfo) -> np.ndarray:
    """Float -> the tensor's integer type with its own scale and zero point (round, clip)."""
    dt = np.dtype(info.dtype)
    q = np.round(np.asarray(x, np.float32) / info.scale) + info.zero_point
    return np.clip(q, np.iinfo(dt).min, np.iinfo(dt).max).astype(dt)


def dequantize(q: np.ndarray, info: TensorInfo) -> np.ndarray:
    return (q.astype(np.float32) - info.zero_point) * np.float32(info.scale)


# --------------------------------------------------------------------------- TFLite

TFLITE_INSTALL = "python3 -m pip install ai-edge-litert   # or, on NumPy 1 images: tflite-runtime"
ORT_INSTALL = "python3 -m pip install onnxruntime"
BATCH = 32  # samples per runtime call when a model takes a batch (parity, validate, serve run larger feeds in chunks)

# (module, label) in preference order: LiteRT is the successor, tflite-runtime what many
# Raspberry Pi images still carry, tf.lite the fallback where TensorFlow is installed.
TFLITE_BACKENDS: Tuple[Tuple[str, str], ...] = (
    ("ai_edge_litert.interpreter", "ai-edge-litert"),
    ("tflite_runtime.interpreter", "tflite-runtime"),
    ("tensorflow.lite", "tensorflow"),
)


def tflite_backend(preferred: Optional[str] = None) -> Tuple[Any, str, str]:
    """Return (Interpreter class, backend label, version) of the first importable TFLite runtime.

    ``preferred`` (or $EDGESHIP_TFLITE_BACKEND) names one label to use alone, so tests can pin one.
    """
    preferred = preferred or os.environ.get("EDGESHIP_TFLITE_BACKEND") or None
    tried = []
    for module, label in TFLITE_BACKENDS:
        if preferred and label != preferred:
            continue
        tried.append(label)
        try:
            mod = importlib.import_module(module)
        except Exception:  # ImportError, or a wheel built against another NumPy ABI
            continue
        interp = getattr(mod, "Interpreter", None)
        if interp is None:
            continue
        return interp, label, _dist_version(label)
    raise RuntimeMissing("tflite", tried or [preferred or "?"], TFLITE_INSTALL)


def _dist_version(dist: str) -> str:
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:
        return "unknown"


# Delegate names a target profile may use -> the shared library the interpreter loads.
TFLITE_DELEGATE_LIBRARIES: Dict[str, str] = {
    "gpu": "libtensorflowlite_gpu_delegate.so",
    "edgetpu": "libedgetpu.so.1",
    "hexagon": "libhexagon_interface.so",
}


def load_delegates(interp_cls: Any, names: Sequence[str]) -> List[Any]:
    """Load each named delegate (or delegate library path) with the backend's own load_delegate.

    Raises the backend's error (ValueError/OSError) when a library is missing: callers decide
    whether that means "not measured here" (the build host) or a failure (the device).
    """
    if not names:
        return []
    mod = importlib.import_module(interp_cls.__module__)
    return [mod.load_delegate(TFLITE_DELEGATE_LIBRARIES.get(n, n)) for n in names]


def _info_from_tflite(d: Dict[str, Any]) -> TensorInfo:
    scale, zp = d.get("quantization", (0.0, 0))
    return TensorInfo(
        name=d["name"],
        shape=[int(s) for s in d["shape"]],
        dtype=np.dtype(d["dtype"]).name,
        scale=float(scale),
        zero_point=int(zp),
    )


class Runner:
    """Open an artifact, describe its I/O, run float feeds, return float outputs."""

    format: str = ""
    backend: str = ""
    backend_version: str = ""

    @property
    def inputs(self) -> List[TensorInfo]:
        raise NotImplementedError

    @property
    def outputs(self) -> List[TensorInfo]:
        raise NotImplementedError

    def run(self, feed: Feed, batch: int = BATCH) -> Feed:
        """Run a batch of any size; float in, float out (quantized I/O handled here).

        At most ``batch`` samples go through the runtime at once, so its activation memory stays
        that of one batch whatever the held-out set's size (a 500-sample ResNet50 batch is gigabytes).
        """
        n = _batch_size(feed)
        if n <= batch and (n == 1 or self._accepts_batch(n)):
            return self._run(feed)
        step = batch if self._accepts_batch(min(batch, n)) else 1
        parts = [self._run_sized({k: v[i : i + step] for k, v in feed.items()}) for i in range(0, n, step)]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def _run_sized(self, feed: Feed) -> Feed:
        n = _batch_size(feed)
        if n != 1 and not self._accepts_batch(n):  # the last, shorter chunk of a fixed-batch model
            parts = [self._run({k: v[i : i + 1] for k, v in feed.items()}) for i in range(n)]
            return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        return self._run(feed)

    def _accepts_batch(self, n: int) -> bool:
        return False

    def _run(self, feed: Feed) -> Feed:
        raise NotImplementedError

    def describe(self) -> Dict[str, Any]:
        return {
            "format": self.format,
            "backend": self.backend,
            "backend_version": self.backend_version,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
        }


def _batch_size(feed: Feed) -> int:
    sizes = {int(v.shape[0]) for v in feed.values() if np.ndim(v) > 0}
    if len(sizes) > 1:
        raise ValueError(f"inputs disagree on batch size: {sorted(sizes)}")
    return sizes.pop() if sizes else 1


class TFLiteRunner(Runner):
    format = "tflite"

    def __init__(
        self,
        path: str,
        threads: Optional[int] = None,
        backend: Optional[str] = None,
        use_xnnpack: bool = True,
        delegates: Sequence[str] = (),
    ) -> None:
        interp_cls, self.backend, self.backend_version = tflite_backend(backend)
        kwargs: Dict[str, Any] = {"model_path": str(path)}
        if threads:
            kwargs["num_threads"] = int(threads)
        if delegates:
            kwargs["experimental_delegates"] = load_delegates(interp_cls, delegates)
        if not use_xnnpack:
            kwargs["experimental_op_resolver_type"] = _no_delegate_resolver(interp_cls)
        try:
            self._interp = interp_cls(**kwargs)
        except TypeError:
            kwargs.pop("experimental_op_resolver_type", None)
            self._interp = interp_cls(**kwargs)
        self._interp.allocate_tensors()
        self._in = self._interp.get_input_details()
        self._out = self._interp.get_output_details()
        self._batch = 1

    @property
    def inputs(self) -> List[TensorInfo]:
        return [_info_from_tflite(d) for d in self._in]

    @property
    def outputs(self) -> List[TensorInfo]:
        return [_info_from_tflite(d) for d in self._out]

    def _accepts_batch(self, n: int) -> bool:
        if all(len(d.get("shape_signature", [])) and d["shape_signature"][0] == -1 for d in self._in):
            if self._batch != n:
                for d in self._in:
                    self._interp.resize_tensor_input(d["index"], [n] + list(d["shape"][1:]))
                self._interp.allocate_tensors()
                self._in = self._interp.get_input_details()
                self._out = self._interp.get_output_details()
                self._batch = n
            return True
        return False

    def _run(self, feed: Feed) -> Feed:
        if self._batch != _batch_size(feed) and not self._accepts_batch(_batch_size(feed)):
            raise ValueError("batch size does not fit the model")
        for d, info in zip(self._in, self.inputs):
            x = _lookup(feed, info.name, len(self._in))
            x = quantize(x, info) if info.quantized else np.asarray(x, dtype=info.dtype)
            self._interp.set_tensor(d["index"], x)
        self._interp.invoke()
        out = {}
        for d, info in zip(self._out, self.outputs):
            y = self._interp.get_tensor(d["index"])
            out[info.name] = dequantize(y, info) if info.quantized else y.astype(np.float32)
        return out

    def invoke_raw(self) -> Callable[[], None]:
        """A zero-argument call that only runs the model on the tensors already set (for timing)."""
        return self._interp.invoke


def _no_delegate_resolver(interp_cls: Any) -> Any:
    mod = importlib.import_module(interp_cls.__module__)
    return mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES


def _lookup(feed: Feed, name: str, n_inputs: int) -> np.ndarray:
    if name in feed:
        return feed[name]
    if n_inputs == 1 and len(feed) == 1:
        return next(iter(feed.values()))
    raise KeyError(f"feed has no input named {name!r} (have {sorted(feed)})")


# --------------------------------------------------------------------------- ONNX

_ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
}


class ONNXRunner(Runner):
    format = "onnx"

    def __init__(
        self,
        path: str,
        threads: Optional[int] = None,
        providers: Optional[Sequence[str]] = None,
        input_quant: Optional[Dict[str, Tuple[float, int]]] = None,
    ) -> None:
        try:
            import onnxruntime as ort
        except Exception:
            raise RuntimeMissing("onnx", ["onnxruntime"], ORT_INSTALL) from None
        self.backend, self.backend_version = "onnxruntime", ort.__version__
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = int(threads)
            so.inter_op_num_threads = 1
        available = ort.get_available_providers()
        wanted = [p for p in (providers or ["CPUExecutionProvider"]) if p in available]
        self.providers = wanted or ["CPUExecutionProvider"]
        self._sess = ort.InferenceSession(str(path), sess_options=so, providers=self.providers)
        self._quant = input_quant or {}
        self._dyn_batch = all(
            not isinstance(i.shape[0], int) if i.shape else False for i in self._sess.get_inputs()
        )

    def _info(self, arg: Any) -> TensorInfo:
        shape = [d if isinstance(d, int) else -1 for d in (arg.shape or [])]
        scale, zp = self._quant.get(arg.name, (0.0, 0))
        return TensorInfo(arg.name, shape, _ORT_DTYPES.get(arg.type, arg.type), scale, zp)

    @property
    def inputs(self) -> List[TensorInfo]:
        return [self._info(a) for a in self._sess.get_inputs()]

    @property
    def outputs(self) -> List[TensorInfo]:
        return [self._info(a) for a in self._sess.get_outputs()]

    def _accepts_batch(self, n: int) -> bool:
        return self._dyn_batch

    def _run(self, feed: Feed) -> Feed:
        ins = self.inputs
        prepared = {}
        for info in ins:
            x = _lookup(feed, info.name, len(ins))
            prepared[info.name] = quantize(x, info) if info.quantized else np.asarray(x, dtype=info.dtype)
        names = [o.name for o in self._sess.get_outputs()]
        ys = self._sess.run(names, prepared)
        outs = self.outputs
        return {
            o.name: dequantize(y, o) if o.quantized else np.asarray(y, dtype=np.float32)
            for o, y in zip(outs, ys)
        }


RUNNERS = {"tflite": TFLiteRunner, "onnx": ONNXRunner}


def open_runner(path: str, fmt: Optional[str] = None, **options: Any) -> Runner:
    """Open ``path`` with the runner for its format (from ``fmt`` or the file suffix)."""
    fmt = fmt or os.path.splitext(str(path))[1].lstrip(".").lower()
    if fmt not in RUNNERS:
        raise ValueError(f"no runner for format {fmt!r} (known: {', '.join(RUNNERS)})")
    return RUNNERS[fmt](str(path), **options)
