"""The PyTorch sample: the starter CNN trained with SGD on the shipped digits, built for arm64."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT
from tests.test_byo import onnx2tf_python  # noqa: F401  (fixture: TFLite from ONNX goes through it)

CNN_TORCH_FLOOR = 0.95  # README: held-out accuracy floor of the PyTorch CNN


@pytest.fixture(scope="module")
def cnn_torch(cache_dir):
    pytest.importorskip("torch")
    from edgeship.train import train_sample

    return train_sample("cnn-torch")


@pytest.mark.slow
def test_cnn_torch_reaches_95_percent_on_held_out_digits(cnn_torch):
    source, dataset, metrics = cnn_torch
    assert source.kind == "torch" and source.inputs[0].shape == [None, 3, 24, 24]
    logits = source.predict(dataset.heldout)[source.outputs[0].name]  # torch's own forward pass
    acc = float(np.mean(logits.argmax(axis=1) == dataset.labels))
    assert acc >= CNN_TORCH_FLOOR
    assert abs(acc - metrics["test_accuracy"]) < 1e-6 and len(dataset.labels) > 300


@pytest.mark.slow
def test_cnn_torch_builds_for_arm64(cnn_torch, onnx2tf_python, tmp_path):
    from edgeship.build import run_builds

    result = run_builds("arm64", out=str(tmp_path / "b"), runs=5, loaded=cnn_torch)[0]
    built = {a.key for a in result.artifacts}
    assert {"onnx:fp32", "onnx:int8", "tflite:fp32", "tflite:int8"} <= built
    for key in built:
        m = result.parity[key].outputs[0]
        assert m.accuracy is not None and m.accuracy >= CNN_TORCH_FLOOR, (key, m.accuracy)
    assert result.passed, result.failures


def test_cnn_torch_without_torch_says_how_in_one_line(tmp_path):
    code = "import sys; sys.modules['torch'] = None; from edgeship.cli import main; main(['build', '--sample', 'cnn-torch', '-o', sys.argv[1]])"
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "b")], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "pip install 'edgeship[torch]'" in lines[0], r.stderr[-2000:]
    assert "Traceback" not in r.stderr and not (tmp_path / "b").exists()
