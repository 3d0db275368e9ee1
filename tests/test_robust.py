"""Fault hardening (issue 10): bounded profiles, checked data, the report schema, crashes named,
interrupts and stale partial folders, a full disk, a verified model cache."""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeship.errors import UsageError
from tests import badinputs as bi


# ----------------------------------------------------------------------------- profiles


@pytest.mark.parametrize("line, says", [
    ("[runtime]\nruns = 1000000000000", "runtime.runs must be in [1, 1000000]"),
    ("[runtime]\nwarmup = -1", "runtime.warmup"),
    ("[runtime]\nthreads = 0", "runtime.threads"),
    ("[budgets.int8]\nsnr_db = nan", "budgets.int8.snr_db must be a finite number"),
    ("[budgets.int8]\nmax_abs = -1", "budgets.int8.max_abs must be in [0.0, inf]"),
    ("[budgets.int8]\ntop1_agreement = 2", "budgets.int8.top1_agreement must be in [0.0, 1.0]"),
    ("latency_budget_ms = -5", "latency_budget_ms must be in (0.0"),
    ("[budgets.int8]\ntop_k = 0", "budgets.int8.top_k"),
    ("[budgets.int8]\ntop_k = -3", "budgets.int8.top_k"),
    ("[budgets.int8.outputs.probs]\ncosine = 3", "budgets.int8.outputs.probs.cosine"),
])
def test_profile_values_that_could_never_pass_or_never_end_are_refused(tmp_path, line, says):
    from edgeship.targets import load_target

    p = tmp_path / "p.toml"
    p.write_text(f'extends = "arm64"\nname = "p"\n{line}\n')
    with pytest.raises(UsageError, match=__import__("re").escape(says)):
        load_target(str(p))


def test_a_binary_profile_is_one_line(tmp_path):
    from edgeship.targets import load_target

    p = tmp_path / "b.toml"
    p.write_bytes(bytes(range(256)))
    with pytest.raises(UsageError, match="not valid TOML"):
        load_target(str(p))


def test_a_per_output_budget_for_an_unknown_output_is_refused_before_converting():
    from edgeship.build import check_budget_outputs
    from edgeship.targets import load_target

    prof = load_target("arm64")
    prof.budgets["int8"]["outputs"] = {"boxes": {"max_abs": 0.1}}
    with pytest.raises(UsageError, match=r"\[budgets.int8.outputs.boxes\] names no output of this model; its outputs are: probs"):
        check_budget_outputs([prof], ["probs"])
    check_budget_outputs([load_target("arm64")], ["probs"])


# ----------------------------------------------------------------------------- data


def _source():
    from edgeship.sources import Source, TensorSpec

    return Source("m", "keras", None, "", [TensorSpec("x", [None, 4], "float32")], [TensorSpec("p", [None, 3], "float32")])


X = np.random.default_rng(0).random((20, 4)).astype(np.float32)
Y = np.arange(20) % 3


@pytest.mark.parametrize("arrays, says", [
    (dict(x=np.array([["a"] * 4] * 20), labels=Y), "holds str values, not numbers"),
    (dict(x=X.astype(np.complex64) + 1j, labels=Y), "complex numbers"),
    (dict(x=np.full_like(X, np.nan), labels=Y), "80 NaN/Inf value(s) of 80 (all of them)"),
    (dict(x=np.where(X > 0.5, np.inf, X), labels=Y), "NaN/Inf"),
    (dict(x=X * 1e12, labels=Y), "more than 1e+09"),
    (dict(x=X, labels=np.array(["cat"] * 20)), "labels are not numbers"),
    (dict(x=X, labels=np.zeros((20, 3))), "labels have shape [20, 3]"),
    (dict(x=X, labels=np.full(20, np.nan)), "NaN, Inf or fractional"),
    (dict(x=X, labels=np.full(20, 10**12)), "the model has 3 classes (0..2)"),
    (dict(x=X, labels=-Y), "the model has 3 classes"),
])
def test_bad_data_is_refused_before_calibration(tmp_path, arrays, says):
    from edgeship.data import load_dataset

    p = tmp_path / "d.npz"
    np.savez(p, **arrays)
    with pytest.raises(UsageError, match=__import__("re").escape(says)):
        load_dataset(str(p), _source(), 5, 5)


def test_a_label_column_is_one_label_per_sample(tmp_path):
    from edgeship.data import load_dataset

    p = tmp_path / "d.npz"
    np.savez(p, x=X, labels=Y[:, None].astype(np.float64))
    ds, _ = load_dataset(str(p), _source(), 5, 5)
    assert ds.labels.dtype == np.int64 and ds.labels.ndim == 1


def test_the_samples_own_split_follows_the_sample_count_options():
    from edgeship.inputs import _limit
    from edgeship.sources import Dataset

    ds = Dataset(calibration={"x": np.zeros((256, 2))}, heldout={"x": np.zeros((359, 2))}, labels=np.zeros(359, np.int64), origin="sample")
    cut, warnings = _limit(ds, 50, 100)
    assert len(cut.calibration["x"]) == 50 and cut.n_heldout == 100 and len(cut.labels) == 100 and not warnings
    same, warnings = _limit(ds, None, 1000)
    assert same.n_heldout == 359 and "using all 359" in warnings[0]


# ----------------------------------------------------------------------------- reports


def test_report_json_fields_are_named_when_missing_or_mistyped(tmp_path):
    from edgeship.compare import load_report
    from tests.test_fuzz import valid_report

    p = tmp_path / "report.json"
    d = valid_report()
    del d["artifacts"][0]["parity"]["checks"][0]["threshold"]
    p.write_text(json.dumps(d))
    with pytest.raises(UsageError, match=r"missing field 'artifacts\[0\].parity.checks\[0\].threshold'"):
        load_report(p)
    p.write_text("[1, 2]")
    with pytest.raises(UsageError, match="not an edgeship report"):
        load_report(p)
    p.write_text(json.dumps({**valid_report(), "schema": "edgeship.report/2"}))
    with pytest.raises(UsageError, match="this edgeship reads edgeship.report/1"):
        load_report(p)
    d = valid_report()
    d["artifacts"][0]["latency"]["p50_ms"] = "fast"
    p.write_text(json.dumps(d))
    with pytest.raises(UsageError, match=r"field 'artifacts\[0\].latency.p50_ms' must be a number, got a string"):
        load_report(p)
    p.write_text(json.dumps(valid_report()))
    assert load_report(p)["artifacts"][0]["path"] == "model_int8.tflite"


# ----------------------------------------------------------------------------- crashes


def test_deploy_names_the_signal_that_killed_the_runner(tmp_path):
    """A runner that dies by a signal is reported as a crash, not `runner check failed: (no output)`."""
    from edgeship.devices.deploy import run_runner
    from edgeship.devices.local import LocalDevice
    from edgeship.errors import DeviceError

    crasher = tmp_path / "python"
    crasher.write_text(f"#!/bin/sh\nexec {sys.executable} -c 'import os, signal; os.kill(os.getpid(), signal.SIGSEGV)'\n")
    crasher.chmod(0o755)
    with pytest.raises(DeviceError, match=r"runner check crashed \(killed by SIGSEGV\)"):
        run_runner(LocalDevice(str(crasher)), {}, str(tmp_path), ["check", str(tmp_path)], 60, ok=(0, 1, 4))


def test_the_probe_names_a_crash_and_a_hang(tmp_path):
    """probe_models attributes a child's death to the file it was on, and bounds a hang in time."""
    from edgeship.runner import probe

    crash = tmp_path / "crash.py"
    crash.write_text("import os, signal, sys\nsys.stdout.write('{\"start\": 0}\\n'); sys.stdout.flush(); os.kill(os.getpid(), signal.SIGSEGV)\n")
    hang = tmp_path / "hang.py"
    hang.write_text("import sys, time\nsys.stdout.write('{\"start\": 0}\\n'); sys.stdout.flush(); time.sleep(60)\n")
    for script, says in ((crash, "crashed the runtime (SIGSEGV)"), (hang, "did not finish within 2 s")):
        wrapper = tmp_path / f"py-{script.stem}"
        wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} {script}\n")
        wrapper.chmod(0o755)
        [why] = probe.probe_models([("m.tflite", "tflite", {})], timeout=2, python=str(wrapper))
        assert says in why


def test_a_full_disk_is_recognised_in_any_wrapping():
    from edgeship.errors import disk_full

    assert disk_full(OSError(errno.ENOSPC, "No space left on device"))
    try:
        try:
            raise OSError(errno.ENOSPC, "x")
        except OSError as e:
            raise RuntimeError("converter failed") from e
    except RuntimeError as wrapped:
        assert disk_full(wrapped)
    assert disk_full(RuntimeError("tensorflow: write failed: No space left on device"))
    assert not disk_full(RuntimeError("op not supported"))


# ----------------------------------------------------------------------------- interrupts


def test_stale_partials_of_dead_builds_are_swept_and_live_ones_kept(tmp_path):
    from edgeship.build import _host, sweep_stale

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".b.partial-{dead.pid}-x1"
    old = tmp_path / f".b.old-{dead.pid}"
    live = tmp_path / f".b.partial-{os.getppid()}-x2"
    here = tmp_path / f".b.partial-{dead.pid}@{_host()}-x3"
    elsewhere = tmp_path / f".b.partial-{dead.pid}@another_host-x4"  # its pid means nothing here
    bundle = tmp_path / "b"
    for d in (stale, old, live, here, elsewhere, bundle):
        d.mkdir()
    assert sorted(p.name for p in sweep_stale(tmp_path)) == sorted([stale.name, old.name, here.name])
    assert live.is_dir() and bundle.is_dir() and elsewhere.is_dir()


# ----------------------------------------------------------------------------- slow: real files


@pytest.mark.slow
def test_a_swapped_cached_model_is_not_used(sample, cache_dir, tmp_path, monkeypatch):
    """A cache entry whose model.keras changed after training is retrained, never trusted."""
    import shutil

    from edgeship.train import train_sample

    # a private copy of the session's cache: the other tests keep the model they were given
    shutil.copytree(cache_dir / "models", tmp_path / "cache" / "models")
    monkeypatch.setenv("EDGESHIP_CACHE_DIR", str(tmp_path / "cache"))
    _, _, metrics = train_sample("digits")
    assert metrics["cached"] is True and Path(metrics["cache_path"]).is_relative_to(tmp_path)
    path = Path(metrics["cache_path"])
    swapped = path.read_bytes()[:-100] + b"\0" * 100
    path.write_bytes(swapped)
    _, _, again = train_sample("digits")
    assert again["cached"] is False and again["test_accuracy"] > 0.9
    assert Path(again["cache_path"]).read_bytes() != swapped
    _, _, third = train_sample("digits")
    assert third["cached"] is True


@pytest.mark.slow
def test_runner_check_exits_1_after_refusing_a_file_and_never_advises_an_upgrade_for_a_damaged_one(arm64_build, tmp_path):
    bundle = Path(arm64_build.bundle)
    sb = bi.Sandbox(tmp_path)
    cases = bi.runner_cases(sb, bundle)
    cut = next(c for c in cases if "truncated" in c.name)
    r = bi.run_case(cut, sb)
    assert r.outcome == "clean", (r.why, r.stderr[-600:])
    tampered = bi.copy_bundle(bundle, sb.root / "work" / "tampered")
    f = tampered / "artifacts" / "model_fp32.onnx"
    f.write_bytes(bi.flip_bytes(f.read_bytes(), 3, 4))
    r = bi.run_case(bi.Case("tampered", "wrong answers", [str(tampered / "edgeship-runner.pyz"), "check", str(tampered)], expect=(1,)), sb)
    assert r.outcome == "clean", (r.why, r.stderr[-600:])
    assert "model_fp32.onnx" in r.stderr


def test_an_error_raised_while_an_interrupt_lands_is_reported_as_the_interrupt(monkeypatch, capsys):
    """A library can turn Ctrl-C into its own error (an interrupted import reads as 'no tflite runtime
    is installed', exit 3): once a signal arrived, main says interrupted, exit 130."""
    import signal as _signal

    from edgeship import cli
    from edgeship.errors import ConversionError

    def interrupted_then_failed(*a, **k):
        cli._INTERRUPTED.append(_signal.SIGINT)
        raise ConversionError("no tflite runtime is installed (tried ai-edge-litert)")

    monkeypatch.setattr(cli.cli, "main", interrupted_then_failed)
    monkeypatch.setattr(cli, "_INTERRUPTED", [])
    old = {s: _signal.getsignal(s) for s in (_signal.SIGINT, _signal.SIGTERM)}
    try:
        with pytest.raises(SystemExit) as e:
            cli.main(["build"])
    finally:
        for s, h in old.items():
            _signal.signal(s, h)
    assert e.value.code == 130
    assert "interrupted" in capsys.readouterr().err
