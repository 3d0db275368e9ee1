"""The zoo (tests/zoo.py): every model shape users bring, built for x86_64 and arm64 through the CLI.

Slow tier: the models are made once and cached, each build is a real `edgeship build` subprocess.
`python benchmarks/zoo.py` prints the same builds as a matrix with sizes, parity and latency.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests import zoo


@pytest.mark.slow
@pytest.mark.parametrize("name", list(zoo.ZOO))
def test_zoo_model_builds_or_says_why_in_one_line(name: str, tmp_path: Path, cache_dir: Path) -> None:
    if zoo.ZOO[name].family in ("torch", "onnx"):
        pytest.importorskip("torch")
    b = zoo.build(name, tmp_path / "dist")
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
        assert arts["onnx:fp32"]["passed"] and [i["name"] for i in arts["onnx:fp32"]["inputs"]] == [arts["tflite:fp32"]["inputs"][0]["name"]]
        assert "onnx:int8" in arts, rep.get("failed_artifacts")
