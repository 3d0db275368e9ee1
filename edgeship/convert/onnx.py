"""Any source -> ONNX fp32 (tf2onnx for TF/Keras), then the recipe through ``quantize``."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

from ..errors import UsageError
from ..quantize import quantize_onnx
from ..sources import Dataset, Source
from ..targets import TargetProfile
from .tf_graph import keras_function

OPSET = 17


_FP32: Dict[str, bytes] = {}  # source sha256 -> exported bytes: one export serves every ONNX recipe


def export_fp32(source: Source, path: Path) -> None:
    cached = _FP32.get(source.sha256)
    if cached is not None:
        path.write_bytes(cached)
        return
    _export(source, path)
    _FP32[source.sha256] = path.read_bytes()


def _export(source: Source, path: Path) -> None:
    if source.kind == "keras":
        import tf2onnx

        fn, spec = keras_function(source)
        tf2onnx.convert.from_function(
            fn, input_signature=spec, opset=OPSET, output_path=str(path),
        )
        return
    raise UsageError(f"ONNX conversion from a {source.kind} model is not supported")


def convert(source: Source, recipe: str, path: Path, dataset: Optional[Dataset], profile: TargetProfile) -> List[str]:
    if recipe == "fp32":
        export_fp32(source, path)
        return []
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        export_fp32(source, fp32)
        return quantize_onnx(fp32, recipe, path, dataset, reduce_range=profile.runtime.reduce_range)
