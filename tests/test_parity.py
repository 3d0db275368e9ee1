"""The comparator on hand-made arrays whose answers are known by hand."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from edgeship import parity
from edgeship.parity import compare, output_metrics
from edgeship.runner.runners import TensorInfo, dequantize, quantize


def test_error_metrics_by_hand():
    ref = np.array([[1.0, -2.0, 4.0, 0.5]])
    out = np.array([[1.5, -2.0, 3.0, 0.5]])  # errors 0.5, 0, 1, 0
    m = output_metrics("y", ref, out)
    assert m.max_abs == pytest.approx(1.0)
    assert m.mean_abs == pytest.approx(0.375)
    assert m.max_rel == pytest.approx(0.5)  # 0.5/1 and 1/4 -> 0.5
    # signal 1+4+16+0.25 = 21.25, noise 0.25+1 = 1.25
    assert m.snr_db == pytest.approx(10 * math.log10(21.25 / 1.25))
    dot = 1.5 - 2 * -2.0 + 12 + 0.25
    assert m.cosine == pytest.approx(dot / (math.sqrt(21.25) * math.sqrt(1.5**2 + 4 + 9 + 0.25)))
    assert m.nonfinite == 0


def test_quantile_of_the_absolute_error():
    ref = np.zeros((1, 101))
    out = np.arange(101, dtype=np.float64)[None, :] / 100.0  # errors 0.00 .. 1.00
    assert output_metrics("y", ref, out, quantile=0.5).quantile_abs == pytest.approx(0.5)
    assert output_metrics("y", ref, out, quantile=0.9).quantile_abs == pytest.approx(0.9)
    r = compare("a", {"y": ref}, {"y": out}, {"quantile": 0.9, "quantile_abs": 0.5})
    (c,) = [c for c in r.checks if c.metric == "quantile_abs"]
    assert c.value == pytest.approx(0.9) and not c.passed and r.outputs[0].quantile == 0.9


def test_identical_outputs_have_capped_snr_and_unit_cosine():
    ref = np.array([[0.1, 0.9], [0.7, 0.3]])
    m = output_metrics("p", ref, ref.copy())
    assert m.max_abs == 0 and m.snr_db == parity.SNR_CAP_DB and m.cosine == pytest.approx(1.0)
    assert m.top1_agreement == 1.0


def test_opposite_outputs_have_cosine_minus_one():
    ref = np.array([1.0, 2.0, 3.0])
    assert output_metrics("y", ref, -ref).cosine == pytest.approx(-1.0)
    # noise = (2·ref)² = 4·signal -> SNR = 10·log10(1/4)
    assert output_metrics("y", ref, -ref).snr_db == pytest.approx(10 * math.log10(0.25))


def test_top1_topk_and_accuracy_by_hand():
    ref = np.array(
        [
            [0.7, 0.2, 0.1],  # top 0
            [0.1, 0.8, 0.1],  # top 1
            [0.2, 0.3, 0.5],  # top 2
            [0.6, 0.3, 0.1],  # top 0
        ]
    )
    out = np.array(
        [
            [0.6, 0.3, 0.1],  # top 0: agrees
            [0.5, 0.4, 0.1],  # top 0: disagrees, ref's top (1) is 2nd
            [0.2, 0.3, 0.5],  # agrees
            [0.1, 0.3, 0.6],  # top 2: disagrees, ref's top (0) is 3rd
        ]
    )
    labels = np.array([0, 1, 1, 0])
    m = output_metrics("p", ref, out, labels=labels, top_k=2)
    assert m.top1_agreement == pytest.approx(0.5)
    assert m.topk_agreement == pytest.approx(0.75) and m.top_k == 2
    assert m.reference_accuracy == pytest.approx(0.75)  # ref predicts 0,1,2,0
    assert m.accuracy == pytest.approx(0.25)  # out predicts 0,0,2,2
    assert m.accuracy_drop == pytest.approx(0.5)


def test_regression_outputs_have_no_classifier_metrics_and_no_check_for_them():
    ref = np.array([[1.0], [2.0]])
    r = compare("a", {"y": ref}, {"y": ref + 0.1}, {"top1_agreement": 0.99, "max_abs": 0.2})
    assert r.outputs[0].top1_agreement is None
    assert [c.metric for c in r.checks] == [parity.NONFINITE, "max_abs"]
    assert r.passed


def test_nan_and_inf_are_a_named_failure_and_json_stays_valid():
    ref = np.ones((2, 3))
    out = ref.copy()
    out[0, 0] = np.nan
    out[1, 2] = np.inf
    r = compare("model_int8.tflite", {"probs": ref}, {"probs": out}, {"max_abs": 1e-3})
    assert not r.passed
    o = r.outputs[0]
    assert (o.nan, o.inf, o.nonfinite) == (1, 1, 2)
    assert r.failures == ["probs: 2 NaN/Inf values in the output (must be none)"]
    assert o.max_abs == 0.0  # the finite values are exact
    text = json.dumps(r.to_dict(), allow_nan=False)  # raises on NaN/Infinity
    assert "NaN/Inf" in text


def test_a_budget_miss_names_its_metric_and_by_how_much():
    ref = np.array([[0.0, 1.0]] * 10)
    out = ref.copy()
    out[0] = [1.0, 0.0]  # one sample of ten flips its top-1
    r = compare("model_int8.onnx", {"probs": ref}, {"probs": out}, {"top1_agreement": 0.99, "snr_db": 20.0})
    assert not r.passed
    by_metric = {c.metric: c for c in r.checks}
    assert by_metric["top1_agreement"].value == pytest.approx(0.9)
    assert by_metric["top1_agreement"].missed_by == pytest.approx(0.09)
    # signal 10, noise 2 -> 6.99 dB
    assert by_metric["snr_db"].value == pytest.approx(10 * math.log10(10 / 2))
    msgs = r.failures
    assert "probs: top1_agreement = 0.9, budget at least 0.99 (missed by 0.09)" in msgs
    assert any(m.startswith("probs: snr_db = 6.9897, budget at least 20 (missed by 13") for m in msgs)


def test_per_output_budgets_override_the_recipe_budget():
    ref = {"a": np.array([1.0, 2.0]), "b": np.array([1.0, 2.0])}
    cand = {"a": np.array([1.05, 2.0]), "b": np.array([1.05, 2.0])}
    budget = {"max_abs": 0.01, "outputs": {"b": {"max_abs": 0.1}}}
    r = compare("m", ref, cand, budget)
    passed = {c.output: c.passed for c in r.checks if c.metric == "max_abs"}
    assert passed == {"a": False, "b": True}
    with pytest.raises(ValueError, match="unknown output"):
        compare("m", ref, cand, {"outputs": {"c": {"max_abs": 1}}})


def test_outputs_are_matched_by_position_when_the_artifact_renamed_them():
    r = compare("m", {"probs": np.array([[0.2, 0.8]])}, {"Identity:0": np.array([[0.2, 0.8]])}, {"max_abs": 0})
    assert r.passed and r.outputs[0].name == "probs"


def test_error_histogram_counts_every_finite_error():
    ref = np.zeros(6)
    out = np.array([0.0, 1e-9, 1e-5, 1e-3, 1e-3, 100.0])
    h = output_metrics("y", ref, out).histogram
    assert sum(h["counts"]) + h["below"] + h["above"] == 6
    assert h["below"] == 2 and h["above"] == 1
    i = next(i for i, e in enumerate(h["edges"]) if e > 1e-3) - 1
    assert h["counts"][i] == 2


def test_int8_outputs_are_dequantized_with_their_own_scale_and_zero_point():
    """What runners do to an int8 output before comparison: (q - zero_point) * scale."""
    info = TensorInfo("probs", [1, 3], "int8", scale=1 / 256, zero_point=-128)
    q = np.array([[-128, 0, 127]], dtype=np.int8)
    np.testing.assert_allclose(dequantize(q, info), [[0.0, 0.5, 255 / 256]])
    x = np.array([[0.0, 0.5, 0.999, 2.0]], dtype=np.float32)
    np.testing.assert_array_equal(quantize(x, info), [[-128, 0, 128 - 1, 127]])


def test_profiles_take_per_output_budgets_and_metric_parameters(tmp_path):
    from edgeship.errors import UsageError
    from edgeship.targets import load_target

    p = tmp_path / "t.toml"
    p.write_text(
        'extends = "arm64"\nname = "t"\n[budgets.int8]\nquantile = 0.999\ntop_k = 3\n'
        "[budgets.int8.outputs.probs]\nmax_abs = 0.05\n"
    )
    b = load_target(str(p)).budget_for("int8")
    assert b["quantile"] == 0.999 and b["top_k"] == 3 and b["snr_db"] == 20.0  # arm64's, merged
    assert b["outputs"] == {"probs": {"max_abs": 0.05}}
    p.write_text('extends = "arm64"\nname = "t"\n[budgets.int8.outputs.probs]\nmax_abz = 0.05\n')
    with pytest.raises(UsageError, match=r"unknown key 'max_abz' in budgets.int8.outputs.probs \(did you mean max_abs\?\)"):
        load_target(str(p))
    p.write_text('extends = "arm64"\nname = "t"\n[budgets.int8]\nquantile = 99.0\n')
    with pytest.raises(UsageError, match="quantile must be in"):
        load_target(str(p))
