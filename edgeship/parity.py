"""The comparator: metrics of a candidate's outputs against the reference's, and budgets.

Comparison is a plain function of two output dicts (as in Polygraphy's comparator), so it
is testable on hand-made arrays and independent of any runtime. Candidates arrive as
float: runners dequantize integer outputs with the artifact's own scale and zero point.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Mapping, Optional

import numpy as np

# metric -> True when higher is better (the budget is a minimum), False when it is a maximum.
BUDGET_METRICS: Dict[str, bool] = {
    "max_abs": False,
    "mean_abs": False,
    "max_rel": False,
    "quantile_abs": False,
    "cosine": True,
    "snr_db": True,
    "top1_agreement": True,
    "topk_agreement": True,
    "accuracy": True,
    "accuracy_drop": False,
}
# Budget keys that are parameters of the metrics rather than thresholds.
BUDGET_PARAMS: Dict[str, type] = {"quantile": float, "top_k": int}
QUANTILE = 0.99
TOPK = 5
SNR_CAP_DB = 200.0  # identical outputs: report a finite, very high SNR rather than inf
REL_FLOOR = 1e-6  # |reference| below this counts as this much in the relative error
# Error histogram bins: fixed, log-spaced (4 per decade from 1e-8 to 10) so artifacts share one axis.
HIST_EDGES = [float(10.0 ** (e / 4)) for e in range(-32, 5)]
NONFINITE = "nan_inf"  # the check that every output value is a finite number
BINARY_THRESHOLD = 0.5  # one output unit with every reference value in [0, 1] is read as a sigmoid probability


@dataclass
class Check:
    output: str
    metric: str
    value: Optional[float]
    threshold: float
    op: str  # ">=" or "<="
    passed: bool

    @property
    def missed_by(self) -> Optional[float]:
        """How far past the budget the value is (0 when it passed)."""
        if self.value is None or self.passed:
            return None if self.value is None else 0.0
        return abs(self.value - self.threshold)

    @property
    def message(self) -> str:
        if self.metric == NONFINITE:
            if self.passed:
                return f"{self.output}: no NaN or Inf values"
            return f"{self.output}: {int(self.value or 0)} NaN/Inf values in the output (must be none)"
        if self.value is None:
            return f"{self.output}: {self.metric} could not be computed"
        if self.passed:
            return f"{self.output}: {self.metric} {self.value:.6g} {self.op} {self.threshold:.6g}"
        want = "at least" if self.op == ">=" else "at most"
        return (
            f"{self.output}: {self.metric} = {self.value:.6g}, budget {want} {self.threshold:.6g} "
            f"(missed by {self.missed_by:.3g})"
        )

    def to_dict(self) -> Dict[str, Any]:
        return {**asdict(self), "missed_by": self.missed_by, "message": self.message}


@dataclass
class OutputMetrics:
    """Error metrics of one output over the finite values; NaN/Inf are counted, never averaged in."""

    name: str
    max_abs: float
    mean_abs: float
    max_rel: float
    quantile_abs: float
    cosine: float
    snr_db: float
    top1_agreement: Optional[float] = None
    topk_agreement: Optional[float] = None
    accuracy: Optional[float] = None
    reference_accuracy: Optional[float] = None
    accuracy_drop: Optional[float] = None
    nonfinite: int = 0
    nan: int = 0
    inf: int = 0
    quantile: float = QUANTILE
    top_k: Optional[int] = None
    threshold: Optional[float] = None  # one sigmoid unit: top-1 means "same side of this threshold"
    histogram: Dict[str, Any] = field(default_factory=dict)


@dataclass
class ParityResult:
    artifact: str
    outputs: List[OutputMetrics]
    checks: List[Check]
    samples: int
    inputs_from: str = "held-out data"

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks) and all(o.nonfinite == 0 for o in self.outputs)

    @property
    def failures(self) -> List[str]:
        return [c.message for c in self.checks if not c.passed]

    def metric(self, name: str, output: Optional[str] = None) -> Optional[float]:
        for o in self.outputs:
            if output is None or o.name == output:
                return getattr(o, name)
        return None

    def to_dict(self) -> Dict[str, Any]:
        return {
            "artifact": self.artifact,
            "outputs": [asdict(o) for o in self.outputs],
            "checks": [c.to_dict() for c in self.checks],
            "samples": self.samples,
            "inputs_from": self.inputs_from,
            "passed": self.passed,
            "failures": self.failures,
        }


def _is_classifier(ref: np.ndarray) -> bool:
    return ref.ndim == 2 and ref.shape[1] > 1


def _is_binary(ref: np.ndarray) -> bool:
    """One unit of probabilities (a sigmoid): a class is which side of 0.5 it falls."""
    return ref.ndim in (1, 2) and (ref.ndim == 1 or ref.shape[1] == 1) and ref.size > 0 and bool(np.all((ref >= 0) & (ref <= 1)))


def error_histogram(err: np.ndarray) -> Dict[str, Any]:
    """Counts of |error| in fixed log-spaced bins, plus how many fell below and above them."""
    counts, _ = np.histogram(err, bins=HIST_EDGES)
    return {
        "edges": HIST_EDGES,
        "counts": [int(c) for c in counts],
        "below": int(np.sum(err < HIST_EDGES[0])),
        "above": int(np.sum(err > HIST_EDGES[-1])),
    }


def snr_db(ref: np.ndarray, out: np.ndarray) -> float:
    """10·log10(Σref² / Σ(out−ref)²), capped at ±SNR_CAP_DB so identical outputs stay finite."""
    signal = float(np.sum(np.square(ref, dtype=np.float64)))
    noise = float(np.sum(np.square(out - ref, dtype=np.float64)))
    if noise == 0.0:
        return SNR_CAP_DB
    if signal == 0.0:
        return -SNR_CAP_DB
    return float(np.clip(10.0 * math.log10(signal / noise), -SNR_CAP_DB, SNR_CAP_DB))


def cosine(ref: np.ndarray, out: np.ndarray) -> float:
    a, b = ref.reshape(-1), out.reshape(-1)
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return float(na == nb)
    return float(np.dot(a, b) / (na * nb))


def output_metrics(
    name: str,
    ref: np.ndarray,
    out: np.ndarray,
    labels: Optional[np.ndarray] = None,
    quantile: float = QUANTILE,
    top_k: int = TOPK,
) -> OutputMetrics:
    """All metrics of one output. ``out`` must already be dequantized float.

    NaN/Inf in ``out`` are counted (and fail the NaN/Inf check); the error metrics are taken
    over the finite positions so that report.json stays valid JSON with finite numbers.
    """
    ref = np.asarray(ref, dtype=np.float64)
    out = np.asarray(out, dtype=np.float64)
    if ref.shape != out.shape:
        if ref.size == out.size:
            out = out.reshape(ref.shape)
        else:
            raise ValueError(f"output {name}: shape {out.shape} does not match the reference {ref.shape}")
    finite = np.isfinite(out)
    n_nan = int(np.isnan(out).sum())
    n_inf = int(np.isinf(out).sum())
    safe = np.where(finite, out, ref)  # non-finite positions contribute no error of their own
    err = np.abs(safe - ref)[finite]
    rel = err / np.maximum(np.abs(ref[finite]), REL_FLOOR)
    m = OutputMetrics(
        name=name,
        max_abs=float(err.max()) if err.size else 0.0,
        mean_abs=float(err.mean()) if err.size else 0.0,
        max_rel=float(rel.max()) if rel.size else 0.0,
        quantile_abs=float(np.quantile(err, quantile)) if err.size else 0.0,
        cosine=cosine(ref, safe),
        snr_db=snr_db(ref, safe),
        nonfinite=n_nan + n_inf,
        nan=n_nan,
        inf=n_inf,
        quantile=float(quantile),
        histogram=error_histogram(err),
    )
    if _is_classifier(ref):
        top_ref = ref.argmax(axis=1)
        top_out = np.where(finite, out, -np.inf).argmax(axis=1)
        m.top1_agreement = float(np.mean(top_out == top_ref))
        k = min(top_k, ref.shape[1])
        m.top_k = k
        topk = np.argsort(-np.where(finite, out, -np.inf), axis=1, kind="stable")[:, :k]
        m.topk_agreement = float(np.mean(np.any(topk == top_ref[:, None], axis=1)))
        if labels is not None and len(labels) == len(ref):
            lab = np.asarray(labels).reshape(-1)
            m.accuracy = float(np.mean(top_out == lab))
            m.reference_accuracy = float(np.mean(top_ref == lab))
            m.accuracy_drop = m.reference_accuracy - m.accuracy
    elif _is_binary(ref):
        # top-1 of one class means nothing: compare the thresholded predictions instead.
        m.threshold = BINARY_THRESHOLD
        cls_ref = ref.reshape(len(ref)) >= BINARY_THRESHOLD
        cls_out = np.where(finite, out, np.nan).reshape(len(ref)) >= BINARY_THRESHOLD
        m.top1_agreement = float(np.mean(cls_out == cls_ref))
        if labels is not None and len(labels) == len(ref):
            lab = np.asarray(labels).reshape(-1).astype(bool)
            m.accuracy = float(np.mean(cls_out == lab))
            m.reference_accuracy = float(np.mean(cls_ref == lab))
            m.accuracy_drop = m.reference_accuracy - m.accuracy
    return m


def check_budget(metrics: OutputMetrics, budget: Mapping[str, float]) -> List[Check]:
    """One Check per budgeted metric, plus the NaN/Inf check every output gets."""
    checks = [Check(metrics.name, NONFINITE, float(metrics.nonfinite), 0.0, "<=", metrics.nonfinite == 0)]
    for metric, threshold in budget.items():
        if metric in BUDGET_PARAMS:
            continue
        if metric not in BUDGET_METRICS:
            raise ValueError(f"unknown budget metric {metric!r}; known: {', '.join(BUDGET_METRICS)}")
        higher_better = BUDGET_METRICS[metric]
        value = getattr(metrics, metric)
        if value is None:  # e.g. top-1 on a regression output: not applicable, not a pass
            continue
        passed = value >= threshold if higher_better else value <= threshold
        checks.append(Check(metrics.name, metric, float(value), float(threshold), ">=" if higher_better else "<=", bool(passed)))
    return checks


def compare(
    artifact: str,
    reference: Mapping[str, np.ndarray],
    candidate: Mapping[str, np.ndarray],
    budget: Optional[Mapping[str, Any]] = None,
    labels: Optional[np.ndarray] = None,
    inputs_from: str = "held-out data",
) -> ParityResult:
    """Compare outputs by name (or by position where the artifact renamed them).

    ``budget`` maps metric -> threshold for every output, plus the parameters ``quantile``
    and ``top_k``; a key ``outputs`` may hold per-output overrides:
    {"snr_db": 20, "outputs": {"probs": {"max_abs": 0.1}}}.
    """
    budget = dict(budget or {})
    per_output = budget.pop("outputs", {}) or {}
    unknown = set(per_output) - set(reference)
    if unknown:
        raise ValueError(f"budget for unknown output(s) {', '.join(sorted(unknown))}; outputs: {', '.join(reference)}")
    ref_names = list(reference)
    cand_names = list(candidate)
    if set(ref_names) == set(cand_names):
        pairs = [(n, n) for n in ref_names]
    elif len(ref_names) == len(cand_names):
        pairs = list(zip(ref_names, cand_names))
    else:
        raise ValueError(f"{artifact}: {len(cand_names)} outputs, the reference has {len(ref_names)}")
    outs, checks = [], []
    n = 0
    for rname, cname in pairs:
        b = dict(budget)
        b.update(per_output.get(rname, {}))
        m = output_metrics(
            rname,
            reference[rname],
            candidate[cname],
            labels,
            quantile=float(b.get("quantile", QUANTILE)),
            top_k=int(b.get("top_k", TOPK)),
        )
        n = len(reference[rname])
        outs.append(m)
        checks.extend(check_budget(m, b))
    return ParityResult(artifact=artifact, outputs=outs, checks=checks, samples=n, inputs_from=inputs_from)
