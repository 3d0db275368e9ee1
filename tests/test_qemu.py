"""The emulated Raspberry Pi (`edgeship device emulate arm64`, `--device qemu-arm64...`).

The slow tests deploy the sample's arm64 bundle to Debian's arm64 Python under qemu-user in both
software generations and fail when an aarch64 result misses the bundle's budgets; a broken
aarch64 result (qemu's `-cpu max`, whose int8 TFLite answers are wrong) shows that is caught.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Dict

import numpy as np
import pytest

from edgeship.devices import qemu
from edgeship.errors import UsageError
from tests.conftest import run_cli


# --------------------------------------------------------------------------- fast: the device's name, offline parts


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("qemu-arm64", ("cortex-a72", "2")),
        ("qemu-arm64:cortex-a76", ("cortex-a76", "2")),
        ("qemu-arm64?numpy=1", ("cortex-a72", "1")),
        ("qemu-arm64:cortex-a76?numpy=1", ("cortex-a76", "1")),
    ],
)
def test_device_grammar(spec: str, expected: tuple) -> None:
    assert qemu.parse_spec(spec) == expected
    assert qemu.canonical_spec(*expected) == f"qemu-arm64:{expected[0]}?numpy={expected[1]}"


@pytest.mark.parametrize(
    "spec, says",
    [
        ("qemu-arm64:max", "unknown CPU 'max'"),
        ("qemu-arm64?numpy=3", "numpy=3 is not a generation"),
        ("qemu-arm64?python=/usr/bin/python3", "unknown option python"),
        ("qemu-arm32", "unknown device"),
    ],
)
def test_bad_device_names_are_usage_errors(spec: str, says: str) -> None:
    with pytest.raises(UsageError, match=says.replace("?", r"\?")):
        qemu.parse_spec(spec)


def test_deploy_to_an_unprepared_emulated_device_says_how_to_prepare_it(tmp_path: Path) -> None:
    r = run_cli("deploy", str(tmp_path), "--device", "qemu-arm64:cortex-a76?numpy=1", env={"EDGESHIP_EMULATED_DIR": str(tmp_path / "none")})
    assert r.returncode in (2, 4), r.stderr  # no bundle here either: whichever is found first, one line
    r = run_cli("device", "check", "qemu-arm64:cortex-a76?numpy=1", env={"EDGESHIP_EMULATED_DIR": str(tmp_path / "none")})
    assert r.returncode == 4 and "Traceback" not in r.stderr
    assert "run `edgeship device emulate arm64 --cpu cortex-a76 --numpy 1` once" in r.stderr


def test_cpuinfo_names_the_core_as_the_runner_reads_it() -> None:
    from edgeship.runner.cli import ARM_PARTS, emulation

    for name, model in qemu.CPUS.items():
        text = qemu.cpuinfo(model, 4)
        assert text.count("processor\t:") == 4
        info = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in text.splitlines()) if k}
        assert ARM_PARTS[info["cpu part"]].lower() == name
        assert emulation("aarch64", info) is None  # an Arm cpuinfo alone looks like a real board: the runner asks the kernel's


def test_pip_is_offered_the_tags_debian_12_accepts() -> None:
    tags = qemu.pip_platforms()
    for needed in ("manylinux_2_17_aarch64", "manylinux_2_27_aarch64", "manylinux_2_28_aarch64", "manylinux_2_34_aarch64", "manylinux2014_aarch64"):
        assert needed in tags
    assert "manylinux_2_38_aarch64" not in tags  # newer than bookworm's glibc 2.36: would not load there


# --------------------------------------------------------------------------- slow: the bundle on the emulated Pi


@pytest.fixture()
def bundle(arm64_build: Any, tmp_path: Path) -> Path:
    dest = tmp_path / "digits-arm64"
    shutil.copytree(arm64_build.bundle, dest)
    return dest


def _section(bundle: Path) -> Dict[str, Any]:
    (d,) = json.loads((bundle / "report.json").read_text())["devices"]
    return d


@pytest.mark.slow
@pytest.mark.parametrize(
    "spec, keys, backends",
    [
        ("qemu-arm64", ["tflite:int8", "tflite:fp32", "onnx:int8", "onnx:fp32"], {"tflite": "ai-edge-litert 2.3.0", "onnx": "onnxruntime 1.31.1"}),
        ("qemu-arm64:cortex-a76?numpy=1", ["tflite:int8", "tflite:fp32"], {"tflite": "tflite-runtime 2.14.0"}),
    ],
    ids=["numpy2-litert-ort-a72", "numpy1-tflite-runtime-a76"],
)
def test_emulated_pi_runs_the_arm64_bundle_within_budget(emulated_pi: Path, bundle: Path, spec: str, keys: list, backends: Dict[str, str]) -> None:
    """Every artifact the generation can run, on aarch64 kernels, judged against the bundle's budgets."""
    sel = [x for k in keys for x in ("--artifact", k)]
    r = run_cli("deploy", str(bundle), "--device", spec, *sel, "--runs", "3")
    assert r.returncode == 0, r.stderr[-3000:] + r.stdout[-3000:]  # exit 1 would be an aarch64 result over budget
    assert "Traceback" not in r.stderr
    d = _section(bundle)
    cpu, numpy_gen = qemu.parse_spec(spec)
    assert d["device"] == qemu.canonical_spec(cpu, numpy_gen) and d["passed"] and not d["failures"]
    f = d["facts"]
    assert f["machine"] == "aarch64" and f["cpu"].lower() == cpu  # the sysroot's Arm cpuinfo...
    assert f["emulated"] and "emulated on" in f["emulated"]  # ...and the kernel's, which says it is emulated
    assert f["numpy"].startswith(numpy_gen + ".") and "Debian GNU/Linux 12" in f["os"]
    arts = {a["key"]: a for a in d["artifacts"]}
    assert list(arts) == keys
    for key, a in arts.items():
        assert a["ran"] and a["passed"] and a["backend"] == backends[key.split(":")[0]]
        assert not a["latency"]["measured"] and "emulated" in a["latency"]["reason"]  # never the emulator's timing
        # against the reference (the budget decides) and against the host (shown): both recorded
        assert a["parity"]["samples"] == 359 and a["parity"]["outputs"][0]["top1_agreement"] >= 0.99
        v = a["vs_host"]
        host = np.load(bundle / "parity" / f"host_{a['artifact']}.npz")
        dev = np.load(bundle / d["outputs"] / f"outputs_{a['artifact']}.npz")
        diff = max(float(np.max(np.abs(host[h].astype(np.float64) - dev[o].astype(np.float64).reshape(host[h].shape)))) for h, o in zip(host.files, dev.files))
        assert v["max_abs"] == pytest.approx(diff, abs=1e-12) and v["identical"] == (diff == 0.0)
        if key.endswith("fp32"):
            assert v["max_abs"] < 1e-5  # float kernels agree across architectures
    md, html = (bundle / "report.md").read_text(), (bundle / "report.html").read_text()
    assert "**Emulated**: aarch64 code emulated on" in md and "**Against the build host's outputs** (x86_64" in md
    for a in arts.values():
        assert f"`{a['artifact']}` identical" in md or f"`{a['artifact']}` differs: max abs" in md
    assert "Emulated: aarch64 code emulated on" in html


@pytest.mark.slow
def test_a_wrong_aarch64_result_fails_the_deploy(emulated_pi: Path, bundle: Path) -> None:
    """qemu's `-cpu max` (7.2, here) computes the int8 TFLite model wrongly: the budget catches it (exit 1).

    Where a qemu computes it right, the real aarch64 outputs are tampered with instead, and the
    same judgement must refuse them.
    """
    broken = qemu.cpu_python("2", "cortex-a72", qemu_cpu="max", root=emulated_pi)
    r = run_cli("deploy", str(bundle), "--device", f"local:{broken}", "--artifact", "tflite:int8", "--artifact", "tflite:fp32", "--runs", "3")
    assert "Traceback" not in r.stderr
    d = _section(bundle)
    a = {x["key"]: x for x in d["artifacts"]}
    assert a["tflite:fp32"]["passed"]  # the float kernels are right on any CPU model
    if not a["tflite:int8"]["passed"]:
        assert r.returncode == 1, r.stderr[-2000:]
        assert "model_int8.tflite: probs: top1_agreement" in r.stderr
        assert not a["tflite:int8"]["vs_host"]["identical"]  # and the report shows it differs from the host's
        assert "`model_int8.tflite` differs: max abs" in (bundle / "report.md").read_text()
        return
    from edgeship.bundle import load_manifest
    from edgeship.devices.deploy import judge, load_npz

    manifest = load_manifest(bundle)
    art = next(x for x in manifest["artifacts"] if x["key"] == "tflite:int8")
    outputs = load_npz(bundle / d["outputs"] / "outputs_model_int8.tflite.npz")
    tampered = {k: np.roll(v, 1, axis=-1) for k, v in outputs.items()}  # every answer moved to the next class
    verdict = judge(bundle, manifest, art, tampered)
    assert not verdict["passed"] and any("top1_agreement" in f for f in verdict["failures"])
    assert not verdict["vs_host"]["identical"] and verdict["vs_host"]["top1_agreement"] < 0.5


@pytest.mark.slow
def test_device_emulate_reports_time_size_and_runtimes(emulated_pi: Path) -> None:
    """Warm: the prepared device is found, started, and its runtimes' versions and wheel tags reported."""
    r = run_cli("device", "emulate", "arm64", "--cpu", "cortex-a76", "--json", "-q", env={"EDGESHIP_EMULATED_DIR": str(emulated_pi)})
    assert r.returncode == 0, r.stderr
    p = json.loads(r.stdout)
    assert p["cached"] and p["spec"] == "qemu-arm64:cortex-a76?numpy=2" and p["size_bytes"] > 50 << 20 and p["seconds"] > 0
    assert p["versions"] == {"python": "3.11.2", "machine": "aarch64", "numpy": "2.2.6", "ai-edge-litert": "2.3.0", "onnxruntime": "1.31.1"}
    tags = {w["name"]: w["platform"] for w in p["wheels"]}
    assert tags["ai-edge-litert"] == "manylinux_2_27_aarch64" and tags["onnxruntime"] == "manylinux_2_28_aarch64"
    assert "manylinux_2_17_aarch64" in tags["numpy"]
