"""Reports and gates on real builds: a budget miss with its per-layer diagnosis, JUnit counts,
report.html in headless Chromium, `validate`, `report` and `compare` through the CLI."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
import pytest

from edgeship import report

from .conftest import run_cli

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]

STRICT_PROFILE = """
# arm64 with an int8 SNR budget no 8-bit model can meet: both int8 artifacts must fail.
extends = "arm64"
name = "arm64-strict"

[[artifacts]]
format = "tflite"
recipe = "int8"

[[artifacts]]
format = "onnx"
recipe = "int8"

[budgets.int8]
snr_db = 90.0

[budgets.int8.outputs.probs]
max_abs = 0.5
"""


@pytest.fixture(scope="session")
def failing_build(sample, tmp_path_factory):
    """A real build whose int8 artifacts miss the SNR budget (so the report carries the diagnosis)."""
    from edgeship.build import run_build

    d = tmp_path_factory.mktemp("strict")
    (d / "strict.toml").write_text(STRICT_PROFILE)
    return run_build(target=str(d / "strict.toml"), out=str(d / "digits-strict"), runs=10)


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium, installed with apt-get when it is missing (tests run as root)."""
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, capture_output=True, env=env, timeout=600)
    subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], check=True, capture_output=True, env=env, timeout=900)
    path = shutil.which("chromium")
    assert path, "apt-get installed chromium but it is not on PATH"
    return path


def render_in_browser(chromium: str, page: Path) -> str:
    """The DOM after the page's scripts ran, from a fresh headless Chromium profile."""
    with tempfile.TemporaryDirectory(prefix="edgeship-chromium-") as profile:
        proc = subprocess.run(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.resolve().as_uri()],
            capture_output=True, text=True, timeout=120,
        )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_budget_miss_names_metric_and_carries_the_layer_diagnosis(failing_build):
    r = failing_build
    assert not r.passed
    assert set(r.diagnosis) == {"tflite:int8", "onnx:int8"}, r.warnings
    for key, p in r.parity.items():
        (snr,) = [c for c in p.checks if c.metric == "snr_db"]
        assert not snr.passed and snr.threshold == 90.0
        assert f"snr_db = {snr.value:.6g}, budget at least 90 (missed by" in snr.message
        (mx,) = [c for c in p.checks if c.metric == "max_abs"]  # the per-output override applied
        assert mx.threshold == 0.5 and mx.passed
    data = json.loads((r.bundle / "report.json").read_text())
    assert data["passed"] is False
    assert all(a["diagnosis"]["rows"] for a in data["artifacts"])
    md = (r.bundle / "report.md").read_text()
    assert "### Where `model_int8.tflite` loses accuracy, layer by layer" in md
    assert "### Where `model_int8.onnx` loses accuracy, layer by layer" in md
    assert "snr_db" in md.split("### What failed")[1]


def test_junit_has_one_case_per_artifact_and_check_with_failure_messages(failing_build):
    data = json.loads((failing_build.bundle / "report.json").read_text())
    suite = ET.parse(failing_build.bundle / "junit.xml").getroot().find("testsuite")
    cases = suite.findall("testcase")
    n_checks = sum(len(a["parity"]["checks"]) for a in data["artifacts"])
    # 2 artifacts x (nan_inf + arm64's top1_agreement, snr_db, accuracy_drop + the max_abs override)
    assert n_checks == 10
    assert int(suite.get("tests")) == len(cases) == n_checks
    failed = [c for c in cases if c.find("failure") is not None]
    assert int(suite.get("failures")) == len(failed) == 2
    assert {c.get("name") for c in failed} == {"probs.snr_db"}
    assert {c.get("classname") for c in failed} == {
        "edgeship.arm64-strict.model_int8.tflite", "edgeship.arm64-strict.model_int8.onnx"
    }
    for c in failed:
        assert re.search(r"snr_db = [\d.]+, budget at least 90 \(missed by", c.find("failure").get("message"))


def test_html_report_renders_its_charts_in_chromium(failing_build, arm64_build, chromium, tmp_path):
    for build, layer_charts in ((failing_build, True), (arm64_build, False)):
        page = build.bundle / "report.html"
        html = page.read_text()
        assert "http://" not in html.replace("http://www.w3.org/2000/svg", "") and "https://" not in html  # no CDN
        dom = render_in_browser(chromium, page)
        body = re.search(r"<body[^>]*>", dom).group(0)
        assert 'data-charts="done"' in body, body
        assert "data-script-errors" not in body, body
        marks = dict(re.findall(r'id="(chart-[a-z]+)"[^>]*data-marks="(\d+)"', dom))
        runs = sum(build.latency[a.key].runs for a in build.artifacts)
        assert int(marks["chart-latency"]) == runs  # one dot per timed run
        assert int(marks["chart-errors"]) == len(build.artifacts)  # one line per artifact
        if layer_charts:
            rows = sum(len(d.rows) for d in build.diagnosis.values())
            assert int(marks["chart-layers"]) == rows > 0 and 'data-charts-drawn="3"' in body
            assert dom.count("<svg") == 2 + len(build.diagnosis)
        else:
            assert marks["chart-layers"] == "0" and "No per-layer diagnosis" in dom


def test_html_script_errors_are_caught_by_the_browser_test(failing_build, chromium, tmp_path):
    """The check can fail: a report whose data breaks a chart is flagged by the page itself."""
    data = json.loads((failing_build.bundle / "report.json").read_text())
    data["artifacts"][0]["parity"]["outputs"][0]["histogram"]["edges"] = "broken"  # not a list: the chart throws
    page = tmp_path / "broken.html"
    page.write_text(report.RENDERERS["html"][1](data))
    body = re.search(r"<body[^>]*>", render_in_browser(chromium, page)).group(0)
    assert "data-script-errors" in body and "chart-errors" in body


# --------------------------------------------------------------------------- per-layer diagnosis


def _damage_conv2_weights(src: Path, dst: Path) -> None:
    """Replace half of conv2's int8 weights with random values in a QDQ ONNX model."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    (init,) = [
        i for i in model.graph.initializer
        if "conv2" in i.name and i.name.endswith("_quantized") and i.data_type == onnx.TensorProto.INT8
    ]
    w = numpy_helper.to_array(init).astype(np.int32)
    rng = np.random.default_rng(0)
    noisy = np.where(rng.random(w.shape) < 0.5, rng.integers(-127, 128, w.shape), w).astype(np.int8)
    init.CopyFrom(numpy_helper.from_array(noisy, init.name))
    onnx.save(model, str(dst))


def test_onnx_diagnosis_points_at_the_damaged_conv(arm64_build, tmp_path):
    from edgeship.diagnose import diagnose_onnx

    arts = {a.key: a for a in arm64_build.artifacts}
    damaged = tmp_path / "model_int8.onnx"
    _damage_conv2_weights(arts["onnx:int8"].path, damaged)
    inputs = arm64_build.dataset.heldout
    healthy = diagnose_onnx(arts["onnx:int8"].path, arts["onnx:fp32"].path, "model_int8.onnx", inputs)
    broken = diagnose_onnx(damaged, arts["onnx:fp32"].path, "model_int8.onnx", inputs)
    assert broken.worst(1)[0].layer == "conv2", [(r.layer, r.score) for r in broken.rows]
    assert healthy.worst(1)[0].layer != "conv2" or healthy.worst(1)[0].score < -30
    conv2 = next(r for r in broken.rows if r.layer == "conv2" and "Conv" in r.op)
    assert conv2.score > max(r.score for r in healthy.rows) + 20  # 100x more noise than any healthy layer adds


def test_tflite_diagnosis_points_at_the_layer_with_a_bad_calibration(sample):
    """Shrink conv2's calibrated range tenfold (a bad calibration for that one layer): the
    QuantizationDebugger's per-layer report must put conv2 first, and the real quantized
    model built from that calibration must miss the budget."""
    from tensorflow.lite.tools import flatbuffer_utils

    from edgeship.diagnose import report_from_debugger, tflite_debugger
    from edgeship.parity import compare
    from edgeship.runner.runners import TFLiteRunner
    from edgeship.targets import load_target

    source, dataset, _ = sample
    debugger = tflite_debugger(source, dataset, dataset.heldout, samples=32)
    healthy = report_from_debugger(debugger, "model_int8.tflite", 32)
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(debugger.calibrated_model))
    damaged = 0
    for t in model.subgraphs[0].tensors:
        if t.name.decode().startswith(f"{source.name}_1/conv2_1/Relu") and t.quantization is not None and t.quantization.max is not None:
            t.quantization.max = t.quantization.max / 10
            damaged += 1
    assert damaged == 1
    debugger.calibrated_model = bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    debugger.options = debugger.options  # re-quantize from the damaged calibration
    broken = report_from_debugger(debugger, "model_int8.tflite", 32)
    assert broken.worst(1)[0].layer == "conv2", [(r.layer, r.score) for r in broken.rows]
    assert broken.worst(1)[0].score > 10 * max(r.score for r in healthy.rows)
    # the artifact that calibration produces really fails the int8 budget
    with tempfile.NamedTemporaryFile(suffix=".tflite") as f:
        f.write(debugger.get_nondebug_quantized_model())
        f.flush()
        out = TFLiteRunner(f.name).run(dataset.heldout)
    result = compare("model_int8.tflite", source.predict(dataset.heldout), out, load_target("arm64").budget_for("int8"), dataset.labels)
    assert not result.passed and any("snr_db" in m for m in result.failures)


def test_validate_explain_cli_names_the_damaged_layer(arm64_build, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(arm64_build.bundle, copy)
    _damage_conv2_weights(arm64_build.bundle / "artifacts" / "model_int8.onnx", copy / "artifacts" / "model_int8.onnx")
    proc = run_cli("validate", str(copy), "--artifact", "model_int8.onnx", "--explain", "--report", str(tmp_path / "rep"),
                   env={"COLUMNS": "200"})
    assert proc.returncode == 1, proc.stderr
    assert "model_int8.onnx: sha256 mismatch (modified or truncated) since the build" in proc.stderr
    table = proc.stdout.split("layers where the error grows")[1]
    first = next(line for line in table.splitlines() if re.match(r"\W*1\W", line))
    assert "conv2" in first, table
    assert "error: " in proc.stderr and "Traceback" not in proc.stderr
    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert data["artifacts"][0]["diagnosis"]["worst"][0] == "conv2"
    assert (tmp_path / "rep" / "report.html").is_file()


# --------------------------------------------------------------------------- validate, report, compare


def test_validate_bundle_passes_and_single_artifact_says_inputs_were_generated(arm64_build, tmp_path):
    proc = run_cli("validate", str(arm64_build.bundle))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("pass") >= 4
    tfl = arm64_build.bundle / "artifacts" / "model_fp32.tflite"
    proc = run_cli("validate", str(tfl), "--reference", str(arm64_build.source.path), "--report", str(tmp_path / "r"))
    assert proc.returncode == 0, proc.stderr
    assert "generated" in proc.stdout and "no --inputs given" in proc.stderr
    data = json.loads((tmp_path / "r" / "report.json").read_text())
    assert data["parity_inputs"]["generated"] is True and data["passed"] is True
    proc = run_cli("validate", str(tfl))
    assert proc.returncode == 2 and "--reference" in proc.stderr


def test_validate_against_a_reference_model_and_user_inputs(arm64_build, tmp_path):
    b = arm64_build.bundle
    keras_model = str(arm64_build.source.path)
    proc = run_cli("validate", str(b), "--reference", keras_model, "--artifact", "model_int8.tflite", "--report", str(tmp_path / "r1"))
    assert proc.returncode == 0, proc.stderr
    data = json.loads((tmp_path / "r1" / "report.json").read_text())
    assert data["validation"]["reference"] == f"reference model {keras_model}"
    assert [a["path"] for a in data["artifacts"]] == ["model_int8.tflite"]
    # one artifact on the user's own held-out data, labels included: accuracy is measured
    ds = arm64_build.dataset
    np.savez(tmp_path / "heldout.npz", image=ds.heldout["image"][:100], __labels__=ds.labels[:100])
    proc = run_cli("validate", str(b / "artifacts" / "model_int8.onnx"), "--reference", keras_model,
                   "--inputs", str(tmp_path / "heldout.npz"), "--report", str(tmp_path / "r2"))
    assert proc.returncode == 0, proc.stderr
    data = json.loads((tmp_path / "r2" / "report.json").read_text())
    assert data["parity_inputs"]["origin"].startswith("user data:") and data["parity_inputs"]["generated"] is False
    o = data["artifacts"][0]["parity"]["outputs"][0]
    assert o["accuracy"] is not None and data["artifacts"][0]["recipe"] == "int8"
    assert {c["metric"] for c in data["artifacts"][0]["parity"]["checks"]} == {"nan_inf", "top1_agreement", "snr_db", "accuracy_drop"}


def test_report_command_renders_every_format(arm64_build, tmp_path):
    b = arm64_build.bundle
    for fmt, name in (("md", "report.md"), ("junit", "junit.xml"), ("json", "report.json")):
        proc = run_cli("report", str(b), "--format", fmt)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == (b / name).read_text()
    proc = run_cli("report", str(b), "--format", "html", "--out", str(tmp_path / "r.html"))
    assert proc.returncode == 0 and (tmp_path / "r.html").read_text() == (b / "report.html").read_text()
    assert run_cli("report", str(tmp_path), "--format", "md").returncode == 2


def test_compare_fails_on_a_constructed_regression(arm64_build, tmp_path):
    old = arm64_build.bundle / "report.json"
    data = json.loads(old.read_text())
    same = tmp_path / "same.json"
    same.write_text(json.dumps(data))
    proc = run_cli("compare", str(old), str(same), "--markdown", str(tmp_path / "summary.md"))
    assert proc.returncode == 0 and "no regression" in proc.stdout, proc.stdout + proc.stderr
    assert "✅ no regression" in (tmp_path / "summary.md").read_text()

    a = next(a for a in data["artifacts"] if a["key"] == "tflite:int8")
    check = next(c for c in a["parity"]["checks"] if c["metric"] == "top1_agreement")
    check.update(value=0.97, passed=False, message="probs: top1_agreement = 0.97, budget at least 0.99 (missed by 0.02)")
    b = next(a for a in data["artifacts"] if a["key"] == "onnx:fp32")
    b["latency"]["p50_ms"] *= 1.5
    worse = tmp_path / "worse.json"
    worse.write_text(json.dumps(data))
    proc = run_cli("compare", str(old), str(worse), env={"COLUMNS": "250"})
    assert proc.returncode == 1, proc.stdout
    assert "2 regression(s)" in proc.stderr and "Traceback" not in proc.stderr
    assert "top1_agreement" in proc.stderr and "p50 grew 50.0%" in proc.stderr
    regs = [line for line in proc.stdout.splitlines() if "REGRESSION" in line]
    assert len(regs) == 2 and any("model_int8.tflite" in r for r in regs) and any("model_fp32.onnx" in r for r in regs)
    # a looser latency gate lets the latency through but not the parity drop
    proc = run_cli("compare", str(old), str(worse), "--max-latency-increase", "60")
    assert proc.returncode == 1 and "1 regression(s)" in proc.stderr
    # a missing artifact is a regression too
    data["artifacts"] = [x for x in data["artifacts"] if x["key"] != "onnx:int8"]
    worse.write_text(json.dumps(data))
    assert "not in the new report" in run_cli("compare", str(old), str(worse), env={"COLUMNS": "250"}).stdout


def test_compare_rejects_what_is_not_a_report(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text('{"hello": 1}')
    proc = run_cli("compare", str(bad), str(bad))
    assert proc.returncode == 2 and "not an edgeship report" in proc.stderr


def test_validate_explain_without_the_source_model_says_what_to_pass(arm64_build, tmp_path):
    """The bundle moved to a machine without the Keras model: parity still runs, the TFLite
    diagnosis (which re-quantizes the source) names the missing --reference."""
    copy = tmp_path / "bundle"
    shutil.copytree(arm64_build.bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["model"]["path"] = str(tmp_path / "elsewhere" / "model.keras")
    (copy / "manifest.json").write_text(json.dumps(manifest))
    proc = run_cli("validate", str(copy), "--artifact", "model_int8.tflite", "--explain")
    assert proc.returncode == 0, proc.stderr
    assert "no per-layer diagnosis: per-layer diagnosis of model_int8.tflite needs the original model: pass --reference with the model it was built from" in proc.stderr
