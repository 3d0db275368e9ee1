"""ONNX -> quantized ONNX with onnxruntime.quantization (QDQ static int8, dynamic, fp16)."""
from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import numpy as np

from .errors import UsageError
from .sources import Dataset


def _keep_int(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    return x if x.dtype.kind in "iub" else x.astype(np.float32)


@contextlib.contextmanager
def _tempdir(path: str) -> Iterator[None]:
    """Python's default temporary folder set to ``path`` for the calls inside (the build is one thread)."""
    saved = tempfile.tempdir
    tempfile.tempdir = path
    try:
        yield
    finally:
        tempfile.tempdir = saved


class _Reader:
    """onnxruntime's CalibrationDataReader over a dataset, one sample per call."""

    def __init__(self, calibration: Dict[str, np.ndarray], input_names: List[str]) -> None:
        n = len(next(iter(calibration.values())))
        if len(calibration) == 1 and len(input_names) == 1:
            calibration = {input_names[0]: next(iter(calibration.values()))}
        # Token ids and other integer inputs keep their dtype: calibration feeds what the model takes.
        self._it = iter([{k: _keep_int(calibration[k][i : i + 1]) for k in input_names} for i in range(n)])

    def get_next(self) -> Optional[Dict[str, np.ndarray]]:
        return next(self._it, None)

    def rewind(self) -> None:  # pragma: no cover - part of the reader protocol
        pass


def quantize_onnx(
    fp32_path: Path,
    recipe: str,
    out_path: Path,
    dataset: Optional[Dataset],
    reduce_range: bool = False,
    keep_float: Optional[List[str]] = None,
) -> List[str]:
    """Write ``out_path`` from ``fp32_path`` with ``recipe``; return notes for the report."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if recipe == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = convert_float_to_float16(onnx.load(str(fp32_path)), keep_io_types=True)
        onnx.save(model, str(out_path))
        return ["float16 weights and activations, float32 I/O"]
    # Scratch inside the bundle's partial folder, and onnxruntime's own ort.quant.* folders inside that:
    # a killed build leaves them where the next build sweeps them, not in /tmp.
    with tempfile.TemporaryDirectory(prefix=".quant-", dir=out_path.parent) as tmp, _tempdir(tmp):
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        if recipe == "dynamic":
            quantize_dynamic(str(pre), str(out_path), weight_type=QuantType.QInt8, reduce_range=reduce_range)
            return ["int8 weights, dynamic activations"]
        if recipe not in ("int8", "int8_strict"):
            raise UsageError(f"recipe {recipe} has no ONNX quantization")
        if dataset is None:
            raise UsageError(f"recipe {recipe} needs calibration data: pass --data")
        names = [i.name for i in onnx.load(str(pre)).graph.input]
        quantize_static(
            str(pre),
            str(out_path),
            _Reader(dataset.calibration, names),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=reduce_range,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=list(keep_float or []),
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
        )
    n = len(next(iter(dataset.calibration.values())))
    return [
        f"static QDQ int8, per-channel weights, calibrated on {n} {'generated' if dataset.generated else 'real'} samples"
        + (", reduce_range (7-bit) for CPUs without VNNI" if reduce_range else "")
    ]
