"""ONNX (and PyTorch, through its ONNX export) -> TensorFlow SavedModel with onnx2tf, for TFLite.

onnx2tf 1.29 pins TensorFlow 2.19, NumPy 1.26 and onnx 1.19 (2.x needs Python 3.12), so it cannot
share our environment: it lives in its own venv (``edgeship setup onnx2tf``) and runs as a
subprocess that writes a SavedModel. Our TensorFlow loads that SavedModel and the usual
TFLiteConverter recipes (fp32, fp16, per-channel int8 calibrated on the user's data) take over,
so ONNX sources get the same TFLite artifacts, checked against the same ONNX reference.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Dict, List, Optional

from ..errors import ConversionError, UsageError
from ..resources import cache_dir
from ..sources import Source, sha256_file, workdir
from . import Skipped

VERSION = "1.29.24"
# onnx2tf's own pins (its wheel metadata), so pip resolves nothing new.
REQUIREMENTS: List[str] = [
    f"onnx2tf=={VERSION}",
    "tensorflow==2.19.0",
    "tf-keras==2.19.0",
    "numpy==1.26.4",
    "onnx==1.19.1",
    "onnxruntime==1.23.0",
    "onnxsim==0.4.36",
    "onnxoptimizer==0.4.2",
    "onnx-graphsurgeon==0.5.8",
    "simple-onnx-processing-tools==1.1.32",
    "ai-edge-litert==2.1.0",
    "protobuf==4.25.5",
    "h5py==3.11.0",
    "ml-dtypes==0.5.1",
    "flatbuffers==25.12.19",
    "psutil==5.9.5",
    "opencv-python==4.11.0.86",
    "requests==2.32.5",
]
ENV_VAR = "EDGESHIP_ONNX2TF_PYTHON"
TIMEOUT_S = 1800

_converted: Dict[str, Path] = {}


def default_env() -> Path:
    return cache_dir() / f"onnx2tf-{VERSION}"


def find_python() -> Optional[Path]:
    """$EDGESHIP_ONNX2TF_PYTHON, else the venv `edgeship setup onnx2tf` made; None when neither exists."""
    from ..venvs import is_complete, venv_python

    given = os.environ.get(ENV_VAR)
    if given:
        if not os.access(given, os.X_OK):
            raise UsageError(f"${ENV_VAR} is {given}, which is not an executable python: fix it, or unset it and run `edgeship setup onnx2tf`")
        return Path(given)
    return venv_python(default_env()) if is_complete(default_env()) else None


def setup(into: Optional[Path] = None, force: bool = False) -> Path:
    """Create onnx2tf's own venv (about a minute and 2.6 GB: TensorFlow 2.19); its python."""
    from ..venvs import ensure_venv

    return ensure_venv(Path(into) if into else default_env(), REQUIREMENTS, force=force)


SKIP = (
    f"TFLite from an ONNX model goes through onnx2tf {VERSION}, which pins TensorFlow 2.19 and so needs its own "
    "environment: run `edgeship setup onnx2tf` once (about a minute, 2.6 GB) and build again"
)


def to_savedmodel(onnx_path: Path) -> Path:
    """onnx2tf's SavedModel of ``onnx_path`` (converted once per file content in this process)."""
    key = sha256_file(onnx_path)
    if key in _converted:
        return _converted[key]
    python = find_python()
    if python is None:
        raise Skipped(SKIP)
    out = workdir() / f"onnx2tf-{key[:12]}"
    # -I: the driver's folder (holding this module, also named onnx2tf) stays off sys.path; PYTHON* ignored.
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "-1"}
    try:
        proc = subprocess.run(
            [str(python), "-I", str(Path(__file__).with_name("onnx2tf_driver.py")), str(onnx_path), str(out)],
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            env=env,
        )
    except subprocess.TimeoutExpired:
        raise ConversionError(f"onnx2tf did not finish converting {onnx_path.name} in {TIMEOUT_S} s") from None
    if proc.returncode != 0 or not (out / "saved_model.pb").is_file():
        raise ConversionError(f"onnx2tf could not convert {onnx_path.name}: {_reason(proc.stdout + proc.stderr)}")
    _converted[key] = out
    return out


def _reason(log: str) -> str:
    """The line of onnx2tf's log that says what failed (its ERROR lines, else the exception)."""
    import re

    lines = [re.sub(r"\x1b\[[0-9;]*m", "", ln).strip() for ln in log.splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith(("W0000", "I0000", "E0000", "WARNING: All log"))]
    errors = [ln for ln in lines if ln.startswith("ERROR:") and "onnx_op_name" in ln]
    exc = [ln for ln in lines if re.match(r"^[A-Za-z_.]*(Error|Exception):", ln)]
    return "; ".join((exc[-1:] + errors[:1]) or lines[-1:] or ["no output"])[:400]


def tf_source(source: Source) -> Source:
    """``source`` (onnx or torch) as a SavedModel source with the same input and output names."""
    from ..sources.savedmodel import load_savedmodel

    if source.onnx_path is None:
        raise Skipped(f"a {source.kind} source without an ONNX graph cannot go through onnx2tf")
    path = to_savedmodel(source.onnx_path)
    saved = load_savedmodel(path, None, {})
    have = {i.name: i for i in saved.inputs}
    missing = [i.name for i in source.inputs if i.name not in have]
    if missing:
        raise Skipped(f"onnx2tf renamed the inputs {', '.join(missing)} (it has {', '.join(have)}): TFLite not built")
    keys: Dict[str, str] = {}
    perms: Dict[str, List[int]] = {}
    outs = {o.name: o for o in saved.outputs}
    for n, o in enumerate(source.outputs):
        got = outs.get(o.name) or outs.get(f"output_{n}")  # the ONNX name where it is a valid TF name
        if got is None:
            raise Skipped(f"onnx2tf's SavedModel has no output '{o.name}' (it has {', '.join(outs)}): TFLite not built")
        keys[o.name] = got.name
        if _same(got.shape, o.shape):
            continue
        nchw = [0, len(o.shape) - 1, *range(1, len(o.shape) - 1)]  # channels-last back to channels-first
        if len(o.shape) >= 3 and _same([got.shape[p] for p in nchw], o.shape):
            perms[o.name] = nchw
            continue
        raise Skipped(f"onnx2tf changed the shape of output '{o.name}' from {o.shape} to {got.shape}: TFLite not built")
    return Source(
        source.name,
        "savedmodel",
        source.path,
        source.sha256,
        source.inputs,
        source.outputs,
        model=saved.model,
        info={"signature": saved.info["signature"], "output_keys": keys, "output_perms": perms, "via": f"onnx2tf {VERSION}"},
        reference=source.reference,
    )


def _same(a: List[Optional[int]], b: List[Optional[int]]) -> bool:
    return len(a) == len(b) and all(x is None or y is None or x == y for x, y in zip(a[1:], b[1:]))
