"""Fuzzing the loaders and the runner with Hypothesis: every malformed input gets the contract.

The contract (tests/badinputs.py): a documented exit code, one ``error:`` line, no traceback, no
crash or hang, nothing written outside the output folder. The fast part feeds mutated profiles,
reports and .npz files to the loaders in this process (they parse text and arrays: nothing there can
take the process down) and a few of them to the real CLI in child processes; the slow part mutates a
real bundle's manifest and model files and runs the bundle's runner and `edgeship validate` on them,
each in a child process, plus interrupts of a real build.
"""
from __future__ import annotations

import json
import math
import signal
import sys
from pathlib import Path
from typing import Any, List

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from edgeship.errors import EdgeshipError, UsageError
from tests import badinputs as bi

FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
CHILD = settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# ----------------------------------------------------------------------------- values

scalars = st.one_of(
    st.integers(min_value=-(10**15), max_value=10**15), st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(), st.text(max_size=12), st.none(),
)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=6)


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v == math.inf else "-inf" if v == -math.inf else repr(v))
    if isinstance(v, int):
        return str(v)
    return json.dumps(str(v))


PROFILE_KEYS = {
    "": ["latency_budget_ms", "arch", "name", "runtimes", "install", "extends"],
    "runtime": ["threads", "warmup", "runs", "xnnpack", "reduce_range", "onnx_providers", "tflite_delegates"],
    "budgets.int8": ["snr_db", "max_abs", "top1_agreement", "topk_agreement", "top_k", "quantile", "cosine", "accuracy_drop", "mean_abs"],
    "budgets.fp32": ["max_abs", "cosine", "snr_db", "top_k"],
    "io": ["input_dtype", "output_dtype"],
}
edits = st.lists(
    st.sampled_from(sorted(PROFILE_KEYS)).flatmap(lambda t: st.tuples(st.just(t), st.sampled_from(PROFILE_KEYS[t]), scalars | st.lists(st.text(max_size=6), max_size=2))),
    min_size=1, max_size=4,
)


def profile_text(changes: List[Any]) -> str:
    tables: dict = {}
    for table, key, value in changes:
        tables.setdefault(table, {})[key] = value
    lines = ['extends = "arm64"']
    for k, v in tables.pop("", {}).items():
        if k != "extends":
            lines.append(f"{k} = {toml_value(v) if not isinstance(v, list) else json.dumps(v)}")
    for table, kv in tables.items():
        lines.append(f"[{table}]")
        lines += [f"{k} = {toml_value(v) if not isinstance(v, list) else json.dumps(v)}" for k, v in kv.items() if v is not None]
    return "\n".join(line for line in lines if not line.endswith("= None")) + "\n"


@FAST
@given(changes=edits)
def test_mutated_profiles_load_or_one_usage_error(changes, tmp_path):
    from edgeship.targets import LIMITS, load_target

    p = tmp_path / "p.toml"
    p.write_text(profile_text(changes))
    try:
        prof = load_target(str(p))
    except UsageError as e:
        assert "\n" not in str(e)
        return
    # accepted: every count and threshold is within its documented range, and finite
    rt = prof.runtime
    assert LIMITS["runs"][0] <= rt.runs <= LIMITS["runs"][1] and LIMITS["warmup"][0] <= rt.warmup <= LIMITS["warmup"][1]
    assert rt.threads is None or 1 <= rt.threads <= 1024
    assert prof.latency_budget_ms is None or 0 < prof.latency_budget_ms <= 3_600_000
    for table in prof.budgets.values():
        for k, v in table.items():
            if k != "outputs":
                assert math.isfinite(v), (k, v)
        assert table.get("top_k", 1) >= 1 and 0 <= table.get("top1_agreement", 0) <= 1


@FAST
@given(data=st.binary(max_size=400))
def test_random_bytes_as_a_profile(data, tmp_path):
    from edgeship.targets import load_target

    p = tmp_path / "b.toml"
    p.write_bytes(data)
    with pytest.raises(UsageError):  # no arch/artifacts in random bytes; never another exception
        load_target(str(p))


@CHILD
@given(changes=edits)
def test_mutated_profiles_on_the_cli(changes, tmp_path_factory):
    sb = bi.Sandbox(tmp_path_factory.mktemp("sb"))
    p = sb.root / "work" / "p.toml"
    p.write_text(profile_text(changes))
    r = bi.run_case(bi.Case("profile", "profiles", bi.edgeship("targets", "show", str(p)), expect=(0, 2), timeout=60), sb)
    assert r.outcome == "clean", (r.why, r.stderr[-500:])


# ----------------------------------------------------------------------------- reports

def valid_report() -> dict:
    check = {"output": "probs", "metric": "snr_db", "value": 40.0, "threshold": 20.0, "op": ">=", "passed": True, "message": "ok"}
    out = {"name": "probs", "max_abs": 0.01, "mean_abs": 0.001, "snr_db": 40.0, "cosine": 0.999, "top1_agreement": 1.0, "accuracy": 0.98}
    art = {
        "path": "model_int8.tflite", "format": "tflite", "recipe": "int8", "key": "tflite:int8", "size": 1000, "required": True, "passed": True,
        "parity": {"outputs": [out], "checks": [check], "failures": []}, "latency": {"measured": True, "p50_ms": 0.05, "p90_ms": 0.06, "p99_ms": 0.07},
        "diagnosis": None,
    }
    return {
        "schema": "edgeship.report/1", "model": {"name": "m", "kind": "keras"}, "target": {"name": "arm64", "latency_budget_ms": None},
        "parity_inputs": {"origin": "test", "samples": 10}, "artifacts": [art], "passed": True, "failures": [], "warnings": [],
    }


def paths(d: Any, prefix: tuple = ()) -> List[tuple]:
    out = [prefix] if prefix else []
    if isinstance(d, dict):
        for k, v in d.items():
            out += paths(v, prefix + (k,))
    elif isinstance(d, list):
        for i, v in enumerate(d):
            out += paths(v, prefix + (i,))
    return out


@st.composite
def mutated_report(draw: Any) -> Any:
    d = valid_report()
    for _ in range(draw(st.integers(1, 3))):
        ps = paths(d)
        if not ps:
            break
        path = draw(st.sampled_from(ps))
        parent = d
        for k in path[:-1]:
            parent = parent[k]
        if draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(json_values)
    return d


def _render_all(data: dict) -> None:
    from edgeship.cli_parity import malformed_report
    from edgeship.compare import compare_reports
    from edgeship.report import RENDERERS

    with malformed_report("r"):
        compare_reports(valid_report(), data)
        compare_reports(data, data)
        for _, render in RENDERERS.values():
            render(data)


@FAST
@given(data=mutated_report())
def test_mutated_reports_load_or_one_usage_error(data, tmp_path):
    from edgeship.compare import load_report

    p = tmp_path / "report.json"
    p.write_text(json.dumps(data))
    try:
        loaded = load_report(p)
        _render_all(loaded)
    except EdgeshipError as e:
        assert e.exit_code == 2 and "\n" not in str(e)


@CHILD
@given(data=mutated_report())
def test_mutated_reports_on_the_cli(data, tmp_path_factory):
    sb = bi.Sandbox(tmp_path_factory.mktemp("sb"))
    p = sb.root / "work" / "report.json"
    p.write_text(json.dumps(data))
    for argv in (bi.edgeship("report", str(p), "--format", "junit"), bi.edgeship("compare", str(p), str(p))):
        r = bi.run_case(bi.Case("report", "reports", argv, expect=(0, 1, 2), timeout=60), sb)
        assert r.outcome == "clean", (r.why, r.stderr[-500:])


# ----------------------------------------------------------------------------- data (.npz)

dtypes = st.sampled_from(["float32", "float64", "float16", "int8", "int64", "uint8", "bool", "complex64", "U3"])


@st.composite
def npz_arrays(draw: Any) -> Any:
    n = draw(st.integers(0, 12))
    xd = draw(dtypes)
    shape = draw(st.sampled_from([(n, 4), (n, 3), (n,), (n, 4, 1)]))
    x = draw(hnp.arrays(np.dtype(xd), shape, elements=None if xd[0] in "Ub" else hnp.from_dtype(np.dtype(xd), allow_nan=True, allow_infinity=True) if xd[0] in "fc" else None))
    arrays = {"x": x}
    if draw(st.booleans()):
        ld = draw(dtypes)
        lshape = draw(st.sampled_from([(n,), (n, 1), (n, 3), (n + 1,)]))
        arrays["labels"] = draw(hnp.arrays(np.dtype(ld), lshape))
    return arrays


@FAST
@given(arrays=npz_arrays())
def test_mutated_npz_data_loads_or_one_usage_error(arrays, tmp_path):
    from edgeship.data import MAX_ABS_INPUT, load_dataset
    from edgeship.sources import Source, TensorSpec

    src = Source("m", "keras", None, "", [TensorSpec("x", [None, 4], "float32")], [TensorSpec("p", [None, 3], "float32")])
    p = tmp_path / "d.npz"
    np.savez(p, **arrays)
    try:
        ds, _ = load_dataset(str(p), src, 4, 4)
    except UsageError as e:
        assert "\n" not in str(e)
        return
    for part in (ds.calibration, ds.heldout):  # accepted data is what calibration can take
        x = part["x"]
        assert x.dtype == np.float32 and np.all(np.isfinite(x)) and (x.size == 0 or np.max(np.abs(x)) <= MAX_ABS_INPUT)
    if ds.labels is not None:
        assert ds.labels.dtype == np.int64 and ds.labels.ndim == 1 and np.all((ds.labels >= 0) & (ds.labels < 3))


def test_a_npz_header_claiming_a_terabyte_is_one_line(tmp_path):
    from edgeship.data import load_dataset
    from edgeship.sources import Source, TensorSpec

    src = Source("m", "keras", None, "", [TensorSpec("x", [None, 4], "float32")], [TensorSpec("p", [None, 3], "float32")])
    with pytest.raises(UsageError, match="cannot read"):
        load_dataset(str(bi.write_zip_bomb_npz(tmp_path / "bomb.npz")), src)


def test_absurd_onnx_dimensions_are_refused_before_generating_inputs(tmp_path):
    from edgeship.sources.load import load_model
    from edgeship.data import generated_dataset

    src = load_model(str(bi.huge_onnx(tmp_path / "huge.onnx")))
    with pytest.raises(UsageError, match="GiB"):
        generated_dataset(src)


# ----------------------------------------------------------------------------- slow: a real bundle

@pytest.fixture(scope="module")
def bundle(arm64_build: Any) -> Path:
    return Path(arm64_build.bundle)


@st.composite
def manifest_mutation(draw: Any) -> Any:
    return draw(st.lists(st.tuples(st.integers(0, 10**6), st.booleans(), json_values), min_size=1, max_size=3))


def mutate_json(d: Any, plan: List[Any]) -> Any:
    for pick, delete, value in plan:
        ps = paths(d)
        if not ps:
            return value
        path = ps[pick % len(ps)]
        parent = d
        for k in path[:-1]:
            parent = parent[k]
        if delete and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = value
    return d


@pytest.mark.slow
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(plan=manifest_mutation())
def test_mutated_manifests_through_the_runner_and_validate(plan, bundle, tmp_path_factory):
    sb = bi.Sandbox(tmp_path_factory.mktemp("sb"))
    b = bi.copy_bundle(bundle, sb.root / "work" / "b")
    m = mutate_json(json.loads((b / "manifest.json").read_text()), plan)
    (b / "manifest.json").write_text(json.dumps(m))
    for argv, may in (
        ([str(b / "edgeship-runner.pyz"), "check", str(b)], ()),
        ([str(b / "edgeship-runner.pyz"), "parity", str(b)], ("work/b/device",)),
        (bi.edgeship("validate", str(b)), ()),
    ):
        r = bi.run_case(bi.Case("manifest", "manifests", argv, expect=(0, 1, 2, 4), may_write=may, timeout=120), sb)
        assert r.outcome == "clean", (argv[1:3], r.why, r.stderr[-800:])


@pytest.mark.slow
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31), n=st.integers(1, 40), which=st.sampled_from(["model_int8.tflite", "model_fp32.tflite", "model_int8.onnx"]))
def test_mutated_model_files_vouched_for_by_the_manifest(seed, n, which, bundle, tmp_path_factory):
    """A damaged artifact whose hash the manifest carries (a crafted bundle): the runner refuses it or
    runs it, and never dies with it; `edgeship validate` likewise."""
    sb = bi.Sandbox(tmp_path_factory.mktemp("sb"))
    b = bi.copy_bundle(bundle, sb.root / "work" / "b")
    f = b / "artifacts" / which
    f.write_bytes(bi.flip_bytes(f.read_bytes(), seed, n))
    bi.rehash(b, f"artifacts/{which}")
    for argv, may in (
        ([str(b / "edgeship-runner.pyz"), "parity", str(b), "--artifact", which], ("work/b/device",)),
        (bi.edgeship("validate", str(b), "--artifact", which), ()),
    ):
        r = bi.run_case(bi.Case("model", "models", argv, expect=(0, 1, 2), may_write=may, timeout=120), sb)
        assert r.outcome == "clean", (argv[1:3], r.why, r.stderr[-800:])


@pytest.mark.slow
def test_a_tflite_that_crashes_the_interpreter_is_refused_everywhere(bundle, tmp_path_factory):
    """Operator 0 writing another tensor: LiteRT dies (SIGSEGV/SIGABRT) on it. The runner and the
    CLI open it in a child process first and name the crash; `build --model` refuses it (exit 2)."""
    sb = bi.Sandbox(tmp_path_factory.mktemp("sb"))
    b = bi.copy_bundle(bundle, sb.root / "work" / "b")
    bi.retarget_tflite_tensor(bundle / "artifacts" / "model_int8.tflite", b / "artifacts" / "model_int8.tflite")
    bi.rehash(b, "artifacts/model_int8.tflite")
    pyz = str(b / "edgeship-runner.pyz")
    cases = [
        bi.Case("check", "crashes", [pyz, "check", str(b)], expect=(1,)),
        bi.Case("parity", "crashes", [pyz, "parity", str(b)], expect=(1,), may_write=("work/b/device",)),
        bi.Case("bench", "crashes", [pyz, "bench", str(b), "--runs", "3"], expect=(1,)),
        bi.Case("validate", "crashes", bi.edgeship("validate", str(b)), expect=(2,)),
        bi.Case("build", "crashes", bi.edgeship("build", "-q", "--model", str(b / "artifacts" / "model_int8.tflite"), "--out", "o"), expect=(2,), may_write=("work/o",)),
    ]
    for case in cases:
        r = bi.run_case(case, sb)
        assert r.outcome == "clean", (case.name, r.why, r.stderr[-800:])
        assert "model_int8.tflite" in r.stderr


@pytest.mark.slow
def test_sigterm_during_a_build_is_an_interrupt_and_leaves_nothing(sample, tmp_path):
    sb = bi.Sandbox(tmp_path)
    case = bi.interrupt_cases(sb)[0]
    assert case.signal_after[1] == signal.SIGTERM
    r = bi.run_case(case, sb)
    assert r.outcome == "clean", (r.why, r.stderr[-800:])
    assert "interrupted" in r.stderr


@pytest.mark.slow
def test_a_dead_builds_partial_folder_is_swept(sample, tmp_path):
    sb = bi.Sandbox(tmp_path)
    r = bi.run_case(bi.stale_partial_case(sb), sb)
    assert r.outcome == "clean", (r.why, r.stderr[-800:])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
