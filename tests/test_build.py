"""`edgeship build` end to end on the sample model: real converters, runtimes and files."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
import pytest

from edgeship import bundle
from edgeship.build import check_parity
from edgeship.convert import Artifact
from edgeship.sources import sha256_file
from edgeship.targets import load_target

from .conftest import ROOT, run_cli

FOUR = {"tflite:fp32", "tflite:int8", "onnx:fp32", "onnx:int8"}


def test_arm64_builds_the_four_artifacts_and_all_pass(arm64_build):
    r = arm64_build
    assert {a.key for a in r.artifacts} == FOUR
    assert r.passed, r.failures
    for a in r.artifacts:
        p = r.parity[a.key]
        assert p.samples == len(r.dataset.labels)
        assert p.outputs[0].top1_agreement >= 0.99
        assert r.latency[a.key].runs == 20 and r.latency[a.key].p50_ms > 0


def test_int8_tflite_has_int8_io_with_scale_and_zero_point(arm64_build):
    art = next(a for a in arm64_build.artifacts if a.key == "tflite:int8")
    (inp,) = art.inputs
    assert inp["dtype"] == "int8" and inp["scale"] > 0
    # the int8 artifact is several times smaller than fp32 (weights are 1 byte, not 4)
    fp32 = next(a for a in arm64_build.artifacts if a.key == "tflite:fp32")
    assert art.size < fp32.size / 2.5


def test_manifest_hashes_match_the_files(arm64_build):
    b = arm64_build.bundle
    manifest = json.loads((b / "manifest.json").read_text())
    on_disk = {str(p.relative_to(b)) for p in b.rglob("*") if p.is_file()} - {"manifest.json"}
    assert set(manifest["files"]) == on_disk
    for rel, meta in manifest["files"].items():
        assert sha256_file(b / rel) == meta["sha256"]
        assert (b / rel).stat().st_size == meta["size"]
    assert bundle.verify(b) == {}
    assert manifest["model"]["sha256"] == sha256_file(Path(arm64_build.source.path))
    assert manifest["target"]["name"] == "arm64"
    assert {"tensorflow-cpu", "onnxruntime", "tf2onnx", "ai-edge-litert"} <= set(manifest["libraries"])


def test_tampering_is_detected_by_verify(arm64_build, tmp_path):
    import shutil

    copy = tmp_path / "b"
    shutil.copytree(arm64_build.bundle, copy)
    with open(copy / "artifacts" / "model_int8.tflite", "r+b") as f:
        f.truncate(1000)
    assert bundle.verify(copy) == {"artifacts/model_int8.tflite": "sha256 mismatch (modified or truncated)"}


def test_reports_show_every_artifact(arm64_build):
    b = arm64_build.bundle
    md = (b / "report.md").read_text()
    for name in ("model_fp32.tflite", "model_int8.tflite", "model_fp32.onnx", "model_int8.onnx"):
        assert f"`{name}`" in md
    data = json.loads((b / "report.json").read_text())
    assert data["schema"].startswith("edgeship.report/")
    assert len(data["artifacts"]) == 4 and data["passed"] is True
    suite = ET.parse(b / "junit.xml").getroot().find("testsuite")
    cases = suite.findall("testcase")
    assert int(suite.get("tests")) == len(cases) > 4 and suite.get("failures") == "0"


def test_bundled_parity_data_reproduces_the_reported_metrics(arm64_build):
    """The .npz files in the bundle are the data parity was computed on."""
    b = arm64_build.bundle
    with np.load(b / "parity" / "reference.npz") as ref, np.load(b / "parity" / "host_model_int8.tflite.npz") as out:
        err = np.abs(ref["probs"] - next(iter(out.values()))).max()
    assert err == pytest.approx(arm64_build.parity["tflite:int8"].outputs[0].max_abs, rel=1e-5)


def test_perturbed_weights_fail_the_budget(arm64_build, tmp_path):
    """A broken artifact must fail: add noise to one conv's weights in the real ONNX file."""
    import onnx
    from onnx import numpy_helper

    good = next(a for a in arm64_build.artifacts if a.key == "onnx:fp32")
    model = onnx.load(str(good.path))
    conv_weights = {n.input[1] for n in model.graph.node if n.op_type == "Conv"}
    init = next(i for i in model.graph.initializer if i.name in conv_weights)
    w = numpy_helper.to_array(init)
    rng = np.random.default_rng(0)
    init.CopyFrom(numpy_helper.from_array(w + rng.normal(0, 3 * w.std(), w.shape).astype(w.dtype), init.name))
    broken_path = tmp_path / "model_fp32.onnx"
    onnx.save(model, str(broken_path))
    broken = Artifact("onnx", "fp32", broken_path, sha256_file(broken_path), broken_path.stat().st_size)
    profile = load_target("arm64")
    reference = arm64_build.source.predict(arm64_build.dataset.heldout)
    result, _ = check_parity(broken, reference, arm64_build.dataset, profile)
    assert not result.passed
    assert any("max_abs" in f for f in result.failures)
    # and the untouched artifact passes the same budget
    ok, _ = check_parity(good, reference, arm64_build.dataset, profile)
    assert ok.passed


def test_runner_in_the_bundle_runs_standalone(arm64_build, tmp_path):
    """The zipapp runs with plain python and reproduces the host's outputs."""
    b = arm64_build.bundle
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = tmp_path / "dev"
    proc = subprocess.run(
        [sys.executable, str(b / bundle.RUNNER_FILE), "parity", str(b), "--out", str(out)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    for a in arm64_build.artifacts:
        with np.load(out / f"outputs_{a.filename}.npz") as dev, np.load(b / "parity" / f"host_{a.filename}.npz") as host:
            np.testing.assert_allclose(next(iter(dev.values())), next(iter(host.values())), atol=1e-6)


def test_cli_build_x86_64_end_to_end(sample, tmp_path):
    out = tmp_path / "x86"
    proc = run_cli("build", "--target", "x86_64", "--out", str(out), "--runs", "10", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "model_int8.onnx" in proc.stdout
    data = json.loads((out / "report.json").read_text())
    assert {a["key"] for a in data["artifacts"]} == FOUR
    assert data["target"]["runtime"]["reduce_range"] is True
    assert bundle.verify(out) == {}


def test_unknown_target_is_one_line_exit_2(tmp_path):
    proc = run_cli("build", "--target", "arm46", "--out", str(tmp_path / "x"))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "unknown target 'arm46'" in proc.stderr and "did you mean arm64?" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "x").exists()


def test_interrupted_build_leaves_no_bundle_and_keeps_the_old_one(sample, tmp_path):
    """SIGINT in the middle of a real build: exit 130, no new bundle, no partial folder, old bundle intact."""
    out = tmp_path / "digits-arm64"
    out.mkdir()
    (out / "manifest.json").write_text('{"old": true}')
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        # A million timed runs: the build is surely still going when the signal lands (with the cached
        # model the rest of a normal build takes well under a second, and it could finish first).
        [sys.executable, "-m", "edgeship", "build", "--target", "arm64", "--out", str(out), "--runs", "1000000"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env,
        # A shell's background job inherits SIGINT ignored, and Python then never raises KeyboardInterrupt:
        # give the build the default disposition, as a terminal user's Ctrl-C has.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if "timing" in line:  # every artifact and its parity are in the temporary folder by now
            proc.send_signal(signal.SIGINT)
            break
    rest = proc.stderr.read()
    assert proc.wait(timeout=120) == 130, rest
    assert "Traceback" not in rest
    assert json.loads((out / "manifest.json").read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["digits-arm64"]


def test_help_does_not_import_tensorflow():
    code = "import sys, edgeship.cli; edgeship.cli.cli.main(['--help'], standalone_mode=False); " \
           "heavy = [m for m in ('tensorflow', 'onnx', 'onnxruntime', 'cv2', 'keras') if m in sys.modules]; " \
           "assert not heavy, heavy"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
