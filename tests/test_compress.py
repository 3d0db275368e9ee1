"""Pruning (`build --prune`) and distillation (`edgeship distill`) on the real samples."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import run_cli


@pytest.mark.slow
def test_pruned_digits_reach_the_sparsity_keep_accuracy_and_build(sample, tmp_path):
    out = tmp_path / "pruned"
    r = run_cli("build", "--sample", "digits", "--prune", "0.8", "-t", "arm64", "-o", str(out), "--runs", "5", "-q")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "pruned to 80.0% zero weights" in r.stdout and "gzipped" in r.stdout
    assert "XNNPACK sparse inference does not apply" in r.stdout  # 3x3 stride-1 stem over 1 channel
    manifest = json.loads((out / "manifest.json").read_text())
    pruning = manifest["model"]["pruning"]
    assert abs(pruning["reached"] - 0.8) < 0.005 and all(abs(s - 0.8) < 0.01 for s in pruning["layers"].values())
    assert pruning["accuracy_after"] >= 0.95 and pruning["accuracy_before"] >= 0.97
    # the artifact itself carries the zeros: count them in the fp32 TFLite weights
    from tensorflow.lite.tools import flatbuffer_utils as fb

    model = fb.read_model(str(out / "artifacts" / "model_fp32.tflite"))
    consts = [np.frombuffer(bytes(model.buffers[t.buffer].data), np.float32) for t in model.subgraphs[0].tensors
              if t.type == 0 and model.buffers[t.buffer].data is not None and len(t.shape) >= 2]
    zeros = sum(int(np.sum(w == 0)) for w in consts) / sum(w.size for w in consts)
    assert zeros > 0.75, zeros


@pytest.mark.slow
def test_pruning_a_text_model_keeps_token_ids_and_reports(cache_dir):
    from edgeship.compress import prune_model, training_data
    from edgeship.train import train_sample

    source, dataset, _ = train_sample("sentiment")
    train = training_data(None, "sentiment", dataset)
    assert train.x["tokens"].dtype == np.int32 and train.n > 10000
    pruned, report = prune_model(source.model, train, dataset.heldout, dataset.labels, 0.7, epochs=2)
    assert abs(report.reached - 0.7) < 0.005
    assert report.accuracy_after >= 0.68
    assert "no 2-D convolutions" in report.xnnpack_sparse
    assert float(np.mean(source.model.get_layer("embedding").get_weights()[0] == 0)) < 0.01  # the original is untouched


def test_prune_rejects_a_sparsity_outside_0_1():
    r = run_cli("build", "--prune", "1.5")
    assert r.returncode == 2 and "1.5" in r.stderr


@pytest.mark.slow
def test_distilled_student_matches_or_beats_its_from_scratch_twin(cache_dir, tmp_path):
    """Same architecture, same initial weights, same batches and steps; only the loss differs.

    The text sample at the defaults (T=2, alpha=0.5, 10 epochs, width 0.25): the distilled student
    beat its twin for seeds 1, 2, 3 and 1234 (+0.2 to +0.7 points); see README."""
    out = tmp_path / "distilled"
    r = run_cli("distill", "--sample", "sentiment", "-o", str(out), "--runs", "20")
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((out / "distill.json").read_text())
    teacher, student, scratch = report["teacher"], report["student"], report["scratch"]
    assert student["parameters"] == scratch["parameters"] < teacher["parameters"] / 3
    assert student["accuracy"] >= scratch["accuracy"], (student, scratch)
    assert student["accuracy"] >= 0.70
    assert report["temperature"] == 2.0 and report["alpha"] == 0.5
    for d in (teacher, student, scratch):
        assert d["tflite_fp32_bytes"] > 0 and d["p50_ms"] > 0
    # the student then builds like any model
    b = run_cli("build", "--model", str(out / "student.keras"), "--data", str(out / "heldout.npz"), "-t", "arm64",
                "-o", str(tmp_path / "student-arm64"), "--runs", "5", "-q")
    assert b.returncode in (0, 1), b.stderr[-3000:]
    built = json.loads((tmp_path / "student-arm64" / "report.json").read_text())
    assert {a["key"] for a in built["artifacts"]} >= {"tflite:int8", "tflite:fp32"}


def test_distill_rejects_a_student_that_predicts_other_classes(tmp_path):
    import keras

    from edgeship.compress import TrainData, distill
    from edgeship.errors import UsageError

    teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    x = {"x": np.zeros((8, 4), np.float32)}
    with pytest.raises(UsageError, match="same classes"):
        distill(teacher, student, TrainData(x, np.zeros(8, np.int64), "t"), x, np.zeros(8, np.int64))


@pytest.mark.slow
def test_xnnpack_sparse_pattern_is_recognised_and_timed_on_and_off(tmp_path):
    """A MobileNet-shaped stem (3x3 stride-2 over 3 channels, then 1x1) is the case XNNPACK's sparse path covers."""
    import keras

    from edgeship.compress import xnnpack_on_off, xnnpack_sparse_applies
    from edgeship.convert.tflite import frozen_converter
    from edgeship.sources.keras import keras_source

    model = keras.Sequential([
        keras.Input((32, 32, 3), name="image"),
        keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu"),
        keras.layers.Conv2D(16, 1, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(4, activation="softmax"),
    ])
    assert xnnpack_sparse_applies(model).startswith("may apply")
    path = tmp_path / "m.tflite"
    path.write_bytes(frozen_converter(keras_source(model, "m", None, ""))[0].convert())
    t = xnnpack_on_off(path, {"image": np.zeros((1, 32, 32, 3), np.float32)}, threads=1, runs=20)
    assert t["xnnpack_on_p50_ms"] > 0 and t["xnnpack_off_p50_ms"] > 0
    digits_like = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, padding="same"), keras.layers.Flatten(), keras.layers.Dense(2)])
    assert "stride (1, 1) over 1 channel" in xnnpack_sparse_applies(digits_like)
