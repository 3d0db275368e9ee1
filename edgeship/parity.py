"""The comparator: metrics of a candidate's outputs against the reference's, and budgets.

Comparison is a plain function of two output dicts (as in Polygraphy's comparator), so it
is testable on hand-made arrays and independent of any runtime.
"""
from __future__ import annotations

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
QUANTILE = 0.99
TOPK = 5
SNR_CAP_DB = 200.0  # identical outputs: report a finite, very high SNR rather than inf


@dataclass
class Check:
    output: str
    metric: str
    value: Optional[float]
    threshold: float
    op: str  # ">=" or "<="
    passed: bool

    @property
    def message(self) -> str:
        if self.value is None:
            return f"{self.output}: {self.metric} could not be computed"
        if self.passed:
            return f"{self.output}: {self.metric} {self.value:.6g} {self.op} {self.threshold:.6g}"
        gap = abs(self.value - self.threshold)
        want = "at least" if self.op == ">=" else "at most"
        return (
            f"{self.output}: {self.metric} = {self.value:.6g}, budget {want} {self.threshold:.6g} "
            f"(missed by {gap:.3g})"
        )


@dataclass
class OutputMetrics:
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
    histogram: Dict[str, List[float]] = field(default_factory=dict)


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
        msgs = [f"{o.name}: {o.nonfinite} NaN/Inf values in the output" for o in self.outputs if o.nonfinite]
        return msgs + [c.message for c in self.checks if not c.passed]

    def metric(self, name: str, output: Optional[str] = None) -> Optional[float]:
        for o in self.outputs:
            if output is None or o.name == output:
                return getattr(o, name)
        return None

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["passed"] = self.passed
        d["failures"] = self.failures
        return d


def _is_classifier(ref: np.ndarray) -> bool:
    return ref.ndim == 2 and ref.shape[1] > 1


def output_metrics(
    name: str, ref: np.ndarray, out: np.ndarray, labels: Optional[np.ndarray] = None
) -> OutputMetrics:
    """All metrics of one output. ``out`` must already be dequantized float."""
    ref = np.asarray(ref, dtype=np.float64)
    out = np.asarray(out, dtype=np.float64)
    if ref.shape != out.shape:
        if ref.size == out.size:
            out = out.reshape(ref.shape)
        else:
            raise ValueError(f"output {name}: shape {out.shape} does not match the reference {ref.shape}")
    finite = np.isfinite(out)
    nonfinite = int(out.size - finite.sum())
    safe = np.where(finite, out, 0.0)
    err = np.abs(safe - ref)
    if nonfinite:
        err = np.where(finite, err, np.inf)
    denom = np.maximum(np.abs(ref), 1e-6)
    signal = float(np.sum(ref**2))
    noise = float(np.sum((safe - ref) ** 2)) if not nonfinite else float("inf")
    if noise == 0.0:
        snr = SNR_CAP_DB
    elif signal == 0.0:
        snr = -SNR_CAP_DB
    else:
        snr = float(min(SNR_CAP_DB, 10.0 * np.log10(signal / noise)))
    a, b = ref.reshape(-1), safe.reshape(-1)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    cosine = float(np.dot(a, b) / (na * nb)) if na > 0 and nb > 0 else float(na == nb)
    finite_err = err[np.isfinite(err)]
    hist_counts, hist_edges = np.histogram(finite_err, bins=20) if finite_err.size else ([], [])
    m = OutputMetrics(
        name=name,
        max_abs=float(err.max()) if err.size else 0.0,
        mean_abs=float(err.mean()) if err.size else 0.0,
        max_rel=float((err / denom).max()) if err.size else 0.0,
        quantile_abs=float(np.quantile(err, QUANTILE)) if err.size else 0.0,
        cosine=cosine,
        snr_db=snr,
        nonfinite=nonfinite,
        histogram={"counts": [int(c) for c in hist_counts], "edges": [float(e) for e in hist_edges]},
    )
    if _is_classifier(ref):
        top_ref = ref.argmax(axis=1)
        m.top1_agreement = float(np.mean(safe.argmax(axis=1) == top_ref))
        k = min(TOPK, ref.shape[1])
        topk = np.argsort(-safe, axis=1)[:, :k]
        m.topk_agreement = float(np.mean([t in row for t, row in zip(top_ref, topk)]))
        if labels is not None and len(labels) == len(ref):
            lab = np.asarray(labels).reshape(-1)
            m.accuracy = float(np.mean(safe.argmax(axis=1) == lab))
            m.reference_accuracy = float(np.mean(top_ref == lab))
            m.accuracy_drop = m.reference_accuracy - m.accuracy
    return m


def check_budget(metrics: OutputMetrics, budget: Mapping[str, float]) -> List[Check]:
    checks = []
    for metric, threshold in budget.items():
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

    ``budget`` maps metric -> threshold for every output; a key ``outputs`` may hold
    per-output overrides: {"outputs": {"probs": {"max_abs": 0.1}}}.
    """
    budget = dict(budget or {})
    per_output = budget.pop("outputs", {}) or {}
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
        m = output_metrics(rname, reference[rname], candidate[cname], labels)
        n = len(reference[rname])
        outs.append(m)
        b = dict(budget)
        b.update(per_output.get(rname, {}))
        checks.extend(check_budget(m, b))
    return ParityResult(artifact=artifact, outputs=outs, checks=checks, samples=n, inputs_from=inputs_from)
