"""The zoo (tests/zoo.py): every model shape users bring, built for x86_64 and arm64 through the CLI.

Slow tier: the models are made once and cached, each build is a real `edgeship build` subprocess.
`python benchmarks/zoo.py` prints the same builds as a matrix with sizes, parity and latency.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests import zoo
from tests.test_byo import onnx2tf_python  # noqa: F401  (TFLite from ONNX and PyTorch models)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(zoo.ZOO))
def test_zoo_model_builds_or_says_why_in_one_line(name: str, tmp_path: Path, cache_dir: Path, request: pytest.FixtureRequest) -> None:
    env = {}
    if zoo.ZOO[name].family in ("torch", "onnx"):
        pytest.importorskip("torch")
        from edgeship.convert import onnx2tf

        env[onnx2tf.ENV_VAR] = request.getfixturevalue("onnx2tf_python")
    b = zoo.build(name, tmp_path / "dist", env=env)
    assert "Traceback" not in b.stderr, b.stderr[-3000:]
    assert not zoo.contract_violations(b), (zoo.contract_violations(b), b.stderr[-3000:])
    if b.returncode in (0, 1):
        for target, rep in b.reports.items():
            formats = {a["format"] for a in rep["artifacts"]}
            # at least one artifact of each format the target asks for, unless this kind of source cannot give it (and says why)
            for fmt in ("tflite", "onnx"):
                skipped = {k: why for k, why in rep.get("skipped", {}).items() if k.startswith(fmt + ":")}
                assert fmt in formats or (skipped and all(skipped.values())), f"{target}: no {fmt} artifact and no reason"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["seq_noinput_keras", "seq_input_h5"])
def test_sequential_models_build_every_artifact(name: str, tmp_path: Path, cache_dir: Path) -> None:
    """The first model a newcomer writes: a keras.Sequential CNN, in .keras and .h5."""
    b = zoo.build(name, tmp_path / "dist")
    assert b.returncode == 0, b.stderr[-2000:]
    for rep in b.reports.values():
        assert {a["key"] for a in rep["artifacts"]} == {"tflite:int8", "tflite:fp32", "onnx:int8", "onnx:fp32"}
        assert rep["artifacts"][0]["outputs"] and not rep.get("failed_artifacts")


@pytest.mark.slow
def test_efficientnet_normalization_exports_to_onnx(tmp_path: Path, cache_dir: Path) -> None:
    """EfficientNetB0 keeps its Normalization constants as captured tensors: they must not become ONNX inputs."""
    b = zoo.build("efficientnet_b0", tmp_path / "dist")
    assert b.returncode in (0, 1), b.stderr[-2000:]
    for rep in b.reports.values():
        arts = {a["key"]: a for a in rep["artifacts"]}
        assert arts["onnx:fp32"]["passed"] and len(arts["onnx:fp32"]["inputs"]) == 1  # no normalization/Sub/y:0 input
        assert "onnx:int8" in arts, rep.get("failed_artifacts")


@pytest.mark.slow
def test_a_failing_artifact_is_reported_and_the_others_ship(tmp_path: Path, cache_dir: Path) -> None:
    """LSTM: TFLite's int8 calibrator cannot quantize fused LSTM kernels, the other three artifacts build."""
    b = zoo.build("lstm", tmp_path / "dist")
    assert b.returncode == 1 and "Traceback" not in b.stderr, b.stderr[-2000:]
    assert "required artifact(s) could not be built" in b.stderr
    for target, rep in b.reports.items():
        assert {a["key"] for a in rep["artifacts"]} == {"tflite:fp32", "onnx:int8", "onnx:fp32"}
        lost = rep["failed_artifacts"]
        assert [f["key"] for f in lost] == ["tflite:int8"] and "LSTM 'lstm'" in lost[0]["reason"] and lost[0]["required"]
        assert not rep["passed"] and any(f.startswith("model_int8.tflite: not built:") for f in rep["failures"])
        bundle = next((tmp_path / "dist").glob(f"*-{target}"))
        assert not (bundle / "artifacts" / "model_int8.tflite").exists()
        assert "Artifacts that could not be built" in (bundle / "report.md").read_text()
        assert "not built: model cannot be converted to TFLite int8" in (bundle / "junit.xml").read_text()
        tfl = next(a for a in rep["artifacts"] if a["key"] == "tflite:fp32")
        assert tfl["passed"] and any("batch fixed to 1" in n for n in tfl["notes"])
