"""Target profiles: validation, the shipped profiles, multi-target builds, a user's own profile."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Dict
from xml.etree import ElementTree as ET

import numpy as np
import pytest

from edgeship.errors import UsageError
from edgeship.targets import builtin_names, load_target, load_targets, target_refs

from .conftest import run_cli

SHIPPED = ["arm64", "armv7", "gpu", "npu", "x86_64"]
FOUR = {"tflite:fp32", "tflite:int8", "onnx:fp32", "onnx:int8"}


# --------------------------------------------------------------------------- loading, no build


def test_every_shipped_profile_loads_with_its_devices_and_install_line():
    assert builtin_names() == SHIPPED
    for name in SHIPPED:
        p = load_target(name)
        assert p.name == name and p.devices and p.cpu and p.install.startswith("python3 -m pip install")
        assert p.runtimes and p.buildable
        for a in p.buildable:  # every artifact that is built has a parity budget
            assert p.budget_for(a.recipe), (name, a.key)


def test_armv7_extends_arm64_but_builds_tflite_only_and_says_why():
    p = load_target("armv7")
    assert p.arch == "armv7l" and p.runtimes == ["tflite-runtime"]
    assert {a.key for a in p.buildable} == {"tflite:int8", "tflite:fp32"}
    assert set(p.skipped) == {"onnx:int8", "onnx:fp32"}
    assert all("onnxruntime publishes no wheels for 32-bit Arm" in why for why in p.skipped.values())
    assert p.budgets == load_target("arm64").budgets  # inherited


def test_target_lists_and_all():
    assert target_refs("all") == SHIPPED
    assert target_refs("arm64, gpu,arm64") == ["arm64", "gpu"]
    assert [p.name for p in load_targets("npu,x86_64")] == ["npu", "x86_64"]
    with pytest.raises(UsageError, match="--target is empty"):
        target_refs(" , ")


def _profile(tmp_path: Path, text: str, name: str = "my.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text, message",
    [
        ('extends = "npu"\n[io]\ninput_dtype = "float32"\n', "recipe int8_strict is integer-only"),
        ('extends = "arm64"\n[[artifacts]]\nformat = "onnx"\nrecipe = "int8_strict"\n', "built as TFLite only"),
        ('extends = "arm64"\n[runtime]\nonnx_providers = ["CudaExecutionProvider"]\n', "did you mean CUDAExecutionProvider?"),
        ('extends = "arm64"\n[runtime]\ntflite_delegates = ["gpuu"]\n', "did you mean gpu?"),
        ('extends = "arm64"\n[[artifacts]]\nformat = "tflite"\nrecipe = "fp16"\n', "has no parity budget: add a [budgets.fp16]"),
        ('extends = "arm64"\n[unavailable]\ntflite = "no"\nonnx = "no"\n', "no artifact can be built"),
        ('extends = "arm64"\narch = "arm64"\n', "unknown arch 'arm64'"),
        ('extends = "arm64"\ndevices = ["pi", 4]\n', "must be a list of strings"),
        ('extends = "arm64"\nname = "../pi"\n', "name '../pi' must be letters"),
    ],
)
def test_cross_field_rules(tmp_path, text, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        load_target(str(_profile(tmp_path, text)))


# --------------------------------------------------------------------------- bad profiles, real CLI

BAD = {
    "unknown key": ('extends = "arm64"\n[runtime]\nthread = 2\n', "unknown key 'thread' in [runtime] (did you mean threads?)"),
    "wrong type": ('extends = "arm64"\n[runtime]\nthreads = "four"\n', "'threads' in [runtime] must be an integer, got str 'four'"),
    "unknown recipe": (
        'extends = "arm64"\n[[artifacts]]\nformat = "tflite"\nrecipe = "int4"\n',
        "unknown recipe 'int4' in artifacts[0] (did you mean int8?)",
    ),
    "unknown runtime": ('extends = "arm64"\nruntimes = ["onnxrt"]\n', "unknown runtime 'onnxrt' (did you mean onnxruntime?)"),
    "cycle": (None, "cycle in 'extends': a -> b -> a"),
}


@pytest.mark.parametrize("kind", list(BAD))
def test_bad_profile_is_one_line_exit_2_without_traceback(tmp_path, kind):
    text, message = BAD[kind]
    if text is None:
        path = _profile(tmp_path, 'extends = "b.toml"\narch = "aarch64"\n', "a.toml")
        _profile(tmp_path, 'extends = "a.toml"\n', "b.toml")
    else:
        path = _profile(tmp_path, text)
    out = tmp_path / "bundle"
    proc = run_cli("build", "--target", f"x86_64,{path}", "--out", str(out), timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert message in proc.stderr and str(path.name) in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert not out.exists()  # validated before any work: nothing was written, not even x86_64's bundle


# --------------------------------------------------------------------------- every shipped profile, one build


@pytest.fixture(scope="module")
def all_bundles(sample, tmp_path_factory) -> Dict[str, Path]:
    """`edgeship build --target all` through the real CLI: one bundle per shipped profile."""
    out = tmp_path_factory.mktemp("all")
    proc = run_cli("build", "--target", "all", "--out", str(out), "--runs", "5", "--quiet")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    bundles = {name: out / f"digits-{name}" for name in SHIPPED}
    assert sorted(p.name for p in out.iterdir()) == sorted(b.name for b in bundles.values())  # no partial folders
    return bundles


def _manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def _artifacts(bundle: Path) -> Dict[str, dict]:
    return {a["key"]: a for a in _manifest(bundle)["artifacts"]}


def _tensor_dtypes(path: Path) -> set:
    from ai_edge_litert.interpreter import Interpreter

    return {np.dtype(d["dtype"]).name for d in Interpreter(model_path=str(path)).get_tensor_details()}


def test_each_profile_gets_its_formats_and_all_pass(all_bundles):
    expected = {
        "arm64": FOUR,
        "x86_64": FOUR,
        "armv7": {"tflite:int8", "tflite:fp32"},
        "gpu": {"tflite:fp16", "onnx:fp16"},
        "npu": {"tflite:int8_strict"},
    }
    for name, keys in expected.items():
        m = _manifest(all_bundles[name])
        assert set(_artifacts(all_bundles[name])) == keys, name
        assert {p.name for p in (all_bundles[name] / "artifacts").iterdir()} == {a["path"] for a in m["artifacts"]}
        assert m["passed"] is True, (name, m["failures"])
        assert m["target"]["name"] == name


def test_armv7_report_explains_the_missing_onnx(all_bundles):
    md = (all_bundles["armv7"] / "report.md").read_text()
    assert "### Not built for this target" in md
    assert "`onnx:int8`, `onnx:fp32`: onnxruntime publishes no wheels for 32-bit Arm (armv7l)" in md


def test_io_dtypes_follow_the_profiles(all_bundles):
    def io(name, key):
        a = _artifacts(all_bundles[name])[key]
        return a["inputs"][0]["dtype"], a["outputs"][0]["dtype"]

    assert io("arm64", "tflite:int8") == ("int8", "int8")
    assert io("x86_64", "tflite:int8") == ("float32", "float32")
    assert io("npu", "tflite:int8_strict") == ("uint8", "uint8")
    assert io("gpu", "tflite:fp16") == ("float32", "float32")


def test_shared_artifacts_are_converted_once(all_bundles):
    arm = _artifacts(all_bundles["arm64"])
    v7 = _artifacts(all_bundles["armv7"])
    x86 = _artifacts(all_bundles["x86_64"])
    # same format, recipe and options: the armv7 and x86_64 bundles carry arm64's files
    for key, other in (("tflite:int8", v7), ("tflite:fp32", v7), ("onnx:int8", x86), ("onnx:fp32", x86), ("tflite:fp32", x86)):
        assert other[key]["options"]["converted_for"] == "arm64", key
        assert other[key]["sha256"] == arm[key]["sha256"], key
    # x86_64's TFLite int8 has float I/O, so it is a different file, converted for x86_64
    assert x86["tflite:int8"]["options"] == {"io": ["float32", "float32"], "converted_for": "x86_64"}
    assert x86["tflite:int8"]["sha256"] != arm["tflite:int8"]["sha256"]


def test_npu_model_is_integer_only(all_bundles):
    """Read the .tflite itself: every tensor is an integer type and no op touches a float."""
    from ai_edge_litert.interpreter import Interpreter

    path = all_bundles["npu"] / "artifacts" / "model_int8_strict.tflite"
    interp = Interpreter(model_path=str(path))
    dtypes = {d["index"]: np.dtype(d["dtype"]) for d in interp.get_tensor_details()}
    assert {dt.kind for dt in dtypes.values()} <= {"i", "u"}, {dt.name for dt in dtypes.values()}
    ops = interp._get_ops_details()
    assert {"CONV_2D", "FULLY_CONNECTED"} <= {o["op_name"] for o in ops}
    assert "DEQUANTIZE" not in {o["op_name"] for o in ops}
    for op in ops:
        assert all(dtypes[int(t)].kind in "iu" for t in list(op["inputs"]) + list(op["outputs"]) if int(t) >= 0), op
    # and the arm64 int8 model, built from the same source, is integer-only too only by luck of the model:
    # what the npu profile adds is the check, shown failing in test_npu_fails_naming_the_float_op


def test_gpu_artifacts_are_float16_and_gpu_latency_is_not_measured(all_bundles):
    import onnx

    b = all_bundles["gpu"]
    tfl = _tensor_dtypes(b / "artifacts" / "model_fp16.tflite")
    assert "float16" in tfl and not {"int8", "uint8"} & tfl
    model = onnx.load(str(b / "artifacts" / "model_fp16.onnx"))
    weights = {i.name: i.data_type for i in model.graph.initializer}
    conv_w = [n.input[1] for n in model.graph.node if n.op_type == "Conv"]
    assert conv_w and all(weights[w] == onnx.TensorProto.FLOAT16 for w in conv_w)
    arts = _artifacts(b)
    fp32_size = _artifacts(all_bundles["arm64"])["onnx:fp32"]["size"]
    assert arts["onnx:fp16"]["size"] < 0.6 * fp32_size
    for key, reason in (("tflite:fp16", "gpu delegate not available"), ("onnx:fp16", "CUDAExecutionProvider not available")):
        lat = arts[key]["latency"]
        assert lat["measured"] is False and reason in lat["reason"], lat
        assert arts[key]["parity"]["passed"] is True  # fp16 parity was checked, on the CPU
    md = (b / "report.md").read_text()
    assert "| not measured | not measured |" in md and "latency not measured: TFLite gpu delegate" in md
    suite = ET.parse(b / "junit.xml").getroot().find("testsuite")
    assert int(suite.get("failures")) == 0


# --------------------------------------------------------------------------- a model that cannot be integer-only


def test_npu_fails_naming_the_float_op(sample, tmp_path):
    """squareplus lowers to SQUARE, which TFLite has no int8 kernel for: the converter keeps it in
    float (between DEQUANTIZE and QUANTIZE) without complaint; the build must refuse, naming it."""
    import keras

    inp = keras.Input((8,), name="x")
    h = keras.layers.Dense(8, activation="squareplus")(inp)
    model = keras.Model(inp, keras.layers.Dense(4)(h))
    path = tmp_path / "sq.keras"
    model.save(path)
    out = tmp_path / "dist"
    proc = run_cli("build", "--model", str(path), "--target", "x86_64,npu", "--out", str(out), "--runs", "2", timeout=300)
    assert proc.returncode == 3, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: sq cannot be made integer-only (int8_strict): float ops: SQUARE (at "), last
    assert "DEQUANTIZE x1" in last and "QUANTIZE x1" in last
    assert "Traceback" not in proc.stderr
    assert not out.exists() or not any(out.iterdir())  # x86_64 built fine, but no bundle is published


# --------------------------------------------------------------------------- the user's own profile


def test_user_profile_extending_arm64_changes_threads_and_budget(sample, tmp_path):
    path = _profile(
        tmp_path,
        'extends = "arm64"\nname = "my-pi"\n\n[runtime]\nthreads = 1\n\n[budgets.int8]\nsnr_db = 30.0\n',
        "my-pi.toml",
    )
    out = tmp_path / "b"
    proc = run_cli("build", "--target", str(path), "--out", str(out), "--runs", "5", "--quiet")
    assert proc.returncode == 0, proc.stderr
    data = json.loads((out / "report.json").read_text())
    assert data["target"]["name"] == "my-pi" and data["target"]["runtime"]["threads"] == 1
    assert data["target"]["budgets"]["int8"] == {"top1_agreement": 0.99, "snr_db": 30.0, "accuracy_drop": 0.02}
    arts = {a["key"]: a for a in data["artifacts"]}
    assert set(arts) == FOUR
    assert all(a["latency"]["threads"] == 1 for a in arts.values())
    snr = [c for c in arts["tflite:int8"]["parity"]["checks"] if c["metric"] == "snr_db"]
    assert snr and snr[0]["threshold"] == 30.0 and snr[0]["passed"]

    # the same profile with a budget int8 cannot meet fails the build on that budget (exit 1)
    strict = _profile(
        tmp_path,
        f'extends = "{path.name}"\nname = "my-pi-strict"\n[[artifacts]]\nformat = "tflite"\nrecipe = "int8"\n'
        "[budgets.int8]\nsnr_db = 90.0\n",
        "strict.toml",
    )
    proc = run_cli("build", "--target", str(strict), "--out", str(tmp_path / "s"), "--runs", "2", "--quiet")
    assert proc.returncode == 1, proc.stderr
    md = (tmp_path / "s" / "report.md").read_text()
    assert "model_int8.tflite: probs: snr_db" in md and "budget at least 90" in md


def test_readme_profile_examples_load(tmp_path):
    """The README's complete example and its short user profile are valid profiles."""
    from .conftest import ROOT

    text = (ROOT / "README.md").read_text()
    section = text.split("## Target profiles", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```toml\n(.*?)```", section, re.S)
    assert len(blocks) == 2
    full = load_target(str(_profile(tmp_path, blocks[0], "full.toml")))
    assert full.name == "my-pi" and full.latency_budget_ms == 5.0 and [a.required for a in full.artifacts] == [True, False]
    mine = load_target(str(_profile(tmp_path, blocks[1], "mine.toml")))
    assert mine.runtime.threads == 2 and mine.budgets["int8"]["snr_db"] == 30.0


def test_targets_list_and_show_through_the_cli(tmp_path):
    proc = run_cli("targets", "list", timeout=60)
    assert proc.returncode == 0, proc.stderr
    for name in SHIPPED:
        assert name in proc.stdout
    assert "(no onnx)" in proc.stdout and "int8_strict" in proc.stdout
    mine = _profile(tmp_path, 'extends = "armv7"\nname = "pi3"\n[runtime]\nthreads = 2\n')
    proc = run_cli("targets", "show", str(mine), timeout=60)
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)
    assert shown["name"] == "pi3" and shown["arch"] == "armv7l" and shown["runtime"]["threads"] == 2
    assert set(shown["not_built"]) == {"onnx:int8", "onnx:fp32"}


def test_an_op_without_a_tflite_kernel_is_named(tmp_path):
    """tf.math.erf has no TFLite builtin: the conversion error names it instead of dumping MLIR."""
    import keras

    from edgeship.build import generated_dataset
    from edgeship.convert import convert
    from edgeship.errors import ConversionError
    from edgeship.sources import keras_source
    from edgeship.targets import ArtifactSpec

    inp = keras.Input((8,), name="x")
    h = keras.layers.Lambda(lambda t: keras.ops.erf(t))(keras.layers.Dense(8)(inp))
    src = keras_source(keras.Model(inp, keras.layers.Dense(4)(h)), "erfy", None, "0" * 64)
    with pytest.raises(ConversionError) as e:
        convert(src, ArtifactSpec("tflite", "fp32"), generated_dataset(src), load_target("arm64"), tmp_path)
    assert str(e.value).startswith("erfy cannot be converted to TFLite fp32: ops TFLite has no builtin kernel for: Erf")
    assert "\n" not in str(e.value)
