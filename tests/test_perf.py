"""Builds that scale: stage times and peak memory in report.json, each piece of work done once per
build (conversion, runtime outputs, timing, calibration), the streamed ONNX diagnosis equal to the
whole-set one, parity inputs stored uncompressed only when deflate buys little."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest


def test_report_json_has_stage_times_and_peak_memory(arm64_build):
    data = json.loads((arm64_build.bundle / "report.json").read_text())
    b = data["build"]
    for stage in ("reference", "convert", "parity", "timing"):
        assert b["by_stage"][stage] > 0, b["by_stage"]
    assert arm64_build.build_info()["by_stage"]["bundle"] > 0  # written after the report it times: summary only
    assert sum(b["by_stage"].values()) <= b["wall_seconds"] + 0.01
    assert {s["stage"] for s in b["steps"]} >= {"convert", "parity", "timing"}
    assert all(0 < s["peak_rss_mb"] <= b["peak_memory"]["peak_rss_mb"] for s in b["steps"])
    # a TensorFlow process with models loaded holds hundreds of MB; the figure is a real measurement
    assert 200 < b["peak_memory"]["peak_rss_mb"] < 64 * 1024
    assert "Build: " in (arm64_build.bundle / "report.md").read_text()


def test_tree_rss_counts_a_child_process():
    from edgeship.measure import PeakMemory, tree_rss

    before = tree_rss()
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; b = bytearray(300 << 20); b[::4096] = b'x' * len(b[::4096]); print('ok', flush=True); time.sleep(30)"],
        stdout=subprocess.PIPE,
    )
    try:
        peak = PeakMemory(interval=0.05)
        assert child.stdout.readline().strip() == b"ok"
        time.sleep(0.2)
        during = tree_rss()
        assert during - before > 250 << 20, (before, during)
        assert peak.peak_bytes() >= during * 0.9
        peak.stop()
    finally:
        child.kill()
        child.wait()


SAME_OPTIONS = 'extends = "arm64"\nname = "arm64-again"\n'
ONE_THREAD = 'extends = "arm64"\nname = "arm64-1t"\n[runtime]\nthreads = 1\n'


@pytest.mark.slow
def test_each_distinct_file_is_converted_run_and_timed_once(sample, tmp_path, monkeypatch):
    """Three targets: arm64, the same options under another name, and one thread. Conversions are
    shared by all three; runtime outputs and timings by the first two only (threads change them)."""
    from edgeship import build as b

    calls = {"convert": 0, "outputs": 0, "timing": 0}

    def counting(name, fn):
        def wrapper(*a, **k):
            calls[name] += 1
            return fn(*a, **k)

        return wrapper

    monkeypatch.setattr(b, "convert", counting("convert", b.convert))
    monkeypatch.setattr(b, "heldout_outputs", counting("outputs", b.heldout_outputs))
    monkeypatch.setattr(b, "measure", counting("timing", b.measure))
    (tmp_path / "again.toml").write_text(SAME_OPTIONS)
    (tmp_path / "one.toml").write_text(ONE_THREAD)
    results = b.run_builds(
        ["arm64", str(tmp_path / "again.toml"), str(tmp_path / "one.toml")], out=str(tmp_path / "dist"), loaded=sample, runs=5
    )
    first, again, one = results
    n = len(first.artifacts)
    assert n == len(again.artifacts) == len(one.artifacts) == 4
    assert calls == {"convert": n, "outputs": 2 * n, "timing": 2 * n}
    for a in first.artifacts:
        assert again.parity[a.key].to_dict() == {**first.parity[a.key].to_dict()}
        assert again.latency[a.key].p50_ms == first.latency[a.key].p50_ms
        assert one.latency[a.key].threads == 1 and first.latency[a.key].threads == 2
    rep = json.loads((again.bundle / "report.json").read_text())["build"]
    assert set(rep["reused"]) == {a.key for a in first.artifacts}
    assert all("runtime outputs from arm64" in v and "timing from arm64" in v for v in rep["reused"].values())
    one_rep = json.loads((one.bundle / "report.json").read_text())["build"]
    assert all(v == "conversion from arm64" for v in one_rep["reused"].values())
    # each bundle's files are its own and valid
    for r in results:
        assert subprocess.run([sys.executable, "-m", "edgeship", "validate", str(r.bundle)], capture_output=True).returncode == 0


def _whole_set_snr(quant: Path, fp32: Path, feed):
    """The diagnosis before streaming: qdq_loss_debug.collect_activations over every sample at once."""
    import tempfile

    from onnxruntime.quantization import qdq_loss_debug as qdq

    from edgeship.diagnose import _Reader
    from edgeship.parity import snr_db

    with tempfile.TemporaryDirectory() as tmp:
        acts = {}
        for kind, path in (("quant", quant), ("float", fp32)):
            aug = Path(tmp) / f"{kind}.onnx"
            qdq.modify_model_output_intermediate_tensors(str(path), str(aug))
            acts[kind] = qdq.collect_activations(str(aug), _Reader(list(feed)))
    out = {}
    for name, m in qdq.create_activation_matching(acts["quant"], acts["float"]).items():
        if "float" in m and "post_qdq" in m:
            f = np.concatenate([np.asarray(a, np.float64).reshape(-1) for a in m["float"]])
            q = np.concatenate([np.asarray(a, np.float64).reshape(-1) for a in m["post_qdq"]])
            if f.shape == q.shape:
                out[name] = snr_db(f, q)
    return out


def test_streamed_onnx_diagnosis_equals_the_whole_set_one(arm64_build):
    from edgeship.diagnose import _onnx_feed, diagnose_onnx, streamed_snr

    arts = {a.key: a for a in arm64_build.artifacts}
    quant, fp32 = arts["onnx:int8"].path, arts["onnx:fp32"].path
    feed = _onnx_feed(fp32, arm64_build.dataset.heldout, 64)
    whole = _whole_set_snr(quant, fp32, feed)
    streamed = streamed_snr(quant, fp32, feed)
    assert set(streamed) == set(whole) and len(whole) > 5
    for name in whole:
        assert streamed[name] == pytest.approx(whole[name], abs=1e-6), name
    rep = diagnose_onnx(quant, fp32, "model_int8.onnx", arm64_build.dataset.heldout)
    assert [r.tensor for r in rep.rows] and all(r.metrics["snr_db"] == round(streamed[r.tensor], 2) for r in rep.rows)


@pytest.mark.slow
def test_tflite_diagnosis_reuses_the_int8_calibration(sample, tmp_path):
    """The diagnosis takes the calibration the int8 conversion computed; its report is the one a
    fresh calibration gives."""
    from edgeship.convert import convert
    from edgeship.convert.calibration import memo_for
    from edgeship.diagnose import diagnose_tflite
    from edgeship.targets import ArtifactSpec, load_target

    source, dataset, _ = sample
    memo = memo_for(source)
    memo.clear()
    convert(source, ArtifactSpec("tflite", "int8"), dataset, load_target("arm64"), tmp_path)
    assert len(memo) == 1
    shared = diagnose_tflite(source, dataset, "model_int8.tflite", dataset.heldout, samples=16)
    assert memo.get("_hits") == 1
    memo.clear()
    fresh = diagnose_tflite(source, dataset, "model_int8.tflite", dataset.heldout, samples=16)
    assert "_hits" not in memo
    assert [(r.tensor, r.score, r.metrics) for r in shared.rows] == [(r.tensor, r.score, r.metrics) for r in fresh.rows]


def test_parity_arrays_are_compressed_only_when_it_pays(tmp_path, sample):
    from edgeship.bundle import savez, worth_compressing

    rng = np.random.default_rng(0)
    noise = {"x": rng.standard_normal((64, 3, 64, 64)).astype(np.float32)}
    _, dataset, _ = sample
    assert not worth_compressing(noise)
    assert worth_compressing(dataset.heldout)  # 8x8 digit images: few distinct values
    savez(tmp_path / "n.npz", noise)
    assert (tmp_path / "n.npz").stat().st_size >= noise["x"].nbytes  # stored
    np.testing.assert_array_equal(np.load(tmp_path / "n.npz")["x"], noise["x"])
