"""TFLite int8 calibration statistics computed once per (graph, calibration set) and reused.

TFLiteConverter calibrates inside ``convert()`` and QuantizationDebugger calibrates again
inside its constructor (ResNet50: 18.6 s, more than the conversion). Both go through
``tensorflow.lite.python.optimize.calibrator.Calibrator.calibrate`` on the same float graph
with the same samples, and its result (the float model annotated with min/max statistics)
depends on nothing else. Inside ``shared(memo)``, a calibration whose input model bytes and
samples match an earlier one returns the earlier result instead of running the model again.
Outside, TensorFlow behaves as shipped.
"""
from __future__ import annotations

import contextlib
import hashlib
import threading
from typing import Any, Dict, Iterator, Optional

import numpy as np

_state = threading.local()
_patched = False
_lock = threading.Lock()


def fingerprint(calibration: Dict[str, np.ndarray]) -> str:
    """sha256 of the calibration arrays (names, dtypes, shapes and bytes)."""
    h = hashlib.sha256()
    for name in sorted(calibration):
        a = np.ascontiguousarray(calibration[name])
        h.update(f"{name}|{a.dtype}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _patch() -> None:
    """Wrap Calibrator once per process; the wrapper is a pass-through unless ``shared`` is active."""
    global _patched
    with _lock:
        if _patched:
            return
        from tensorflow.lite.python.optimize import calibrator as _calibrator

        cls = _calibrator.Calibrator
        init, calibrate = cls.__init__, cls.calibrate

        def __init__(self: Any, model_content: bytes, *args: Any, **kwargs: Any) -> None:
            scope = getattr(_state, "scope", None)
            self._edgeship_key = None
            if scope is not None:
                self._edgeship_key = scope[1] + ":" + hashlib.sha256(bytes(model_content)).hexdigest()
            init(self, model_content, *args, **kwargs)

        def cached_calibrate(self: Any, dataset_gen: Any) -> Any:
            scope = getattr(_state, "scope", None)
            key = getattr(self, "_edgeship_key", None)
            if scope is None or key is None:
                return calibrate(self, dataset_gen)
            memo = scope[0]
            if key not in memo:
                memo[key] = calibrate(self, dataset_gen)
            else:
                memo["_hits"] = memo.get("_hits", 0) + 1
            return memo[key]

        cls.__init__ = __init__
        cls.calibrate = cached_calibrate
        _patched = True


@contextlib.contextmanager
def shared(memo: Optional[Dict[str, Any]], samples: str) -> Iterator[None]:
    """Calibrations in this block are looked up in / stored into ``memo`` (keyed by graph and ``samples``)."""
    if memo is None:
        yield
        return
    _patch()
    prev = getattr(_state, "scope", None)
    _state.scope = (memo, samples)
    try:
        yield
    finally:
        _state.scope = prev


def memo_for(source: Any) -> Dict[str, Any]:
    """The calibration memo of a loaded source (lives and dies with it: one build)."""
    return source.__dict__.setdefault("_calibrations", {})
