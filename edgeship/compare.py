"""`edgeship compare OLD NEW`: the CI regression gate between two reports.

A regression is a required artifact check that is past its budget in NEW, an artifact
that disappeared, or a p50 latency that grew by more than the allowed percentage. Every
compared figure is listed, so the table also shows what improved.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from .errors import UsageError

Data = Dict[str, Any]


@dataclass
class Row:
    artifact: str
    what: str
    old: Optional[float]
    new: Optional[float]
    status: str  # "ok", "improved", "worse", "REGRESSION", "new", "missing"
    why: str = ""

    @property
    def regression(self) -> bool:
        return self.status == "REGRESSION"

    @property
    def change(self) -> str:
        if self.old is None or self.new is None:
            return "–"
        d = self.new - self.old
        if self.old != 0 and self.what.startswith("latency"):
            return f"{100 * d / abs(self.old):+.1f}%"
        return f"{d:+.4g}"


# What `compare` and the renderers read from a report.json (edgeship.report/1), checked at load
# so a missing or mistyped field is one line naming it (see jsonshape). Keys ending in ? are optional.
SCHEMA_MAJOR = 1
_NUM = (int, float)
_OPT_NUM = (int, float, type(None))
_CHECK = {"output": str, "metric": str, "value": _OPT_NUM, "threshold": _NUM, "op": str, "passed": bool, "message?": str}
_OUTPUT = {"name": str, "max_abs": _NUM, "mean_abs?": _NUM, "snr_db": _NUM, "cosine": _NUM, "top1_agreement": _OPT_NUM, "accuracy?": _OPT_NUM}
_PARITY = {"outputs": [_OUTPUT], "checks": [_CHECK], "failures?": [str]}
_LATENCY = {"measured?": bool, "p50_ms?": _NUM, "p90_ms?": _NUM, "reason?": str}
_ARTIFACT = {
    "path": str, "format": str, "recipe": str, "key?": str, "size": int, "required": bool, "passed": bool,
    "parity": _PARITY, "latency?": _LATENCY, "diagnosis?": dict,
}
_DEVICE_ARTIFACT = {"artifact": str, "key": str, "required": bool, "ran?": bool, "parity?": _PARITY, "latency?": _LATENCY, "passed?": bool}
_DEVICE = {"device": str, "error?": str, "facts?": dict, "artifacts": [_DEVICE_ARTIFACT], "failures?": [str], "passed?": bool}
REPORT_SCHEMA = {
    "schema": str,
    "model": {"name": str},
    "target": {"name": str, "latency_budget_ms?": _NUM, "not_built?": dict},
    "parity_inputs": {"origin": str},
    "artifacts": [_ARTIFACT],
    "passed": bool,
    "failures": [str],
    "warnings?": [str],
    "training?": dict,
    "host?": dict,
    "devices?": [_DEVICE],
}


def load_report(path: Path) -> Data:
    """report.json, or a bundle folder holding one: checked against the report schema, so a
    malformed file (not JSON, a list, a missing or mistyped field) is one UsageError naming it."""
    from .jsonshape import check

    p = Path(path)
    if p.is_dir():
        p = p / "report.json"
    if not p.is_file():
        raise UsageError(f"{path}: no report.json there (give a report.json or a bundle folder)")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise UsageError(f"{p} is not a readable report.json: {str(e)[:200]}") from None
    schema = data.get("schema") if isinstance(data, dict) else None
    if not isinstance(schema, str) or not schema.startswith("edgeship.report/"):
        raise UsageError(f"{p} is not an edgeship report (no 'schema': 'edgeship.report/{SCHEMA_MAJOR}')")
    major = schema.split("/", 1)[1].split(".")[0]
    if major != str(SCHEMA_MAJOR):
        raise UsageError(f"{p} is a report of schema {schema}; this edgeship reads edgeship.report/{SCHEMA_MAJOR} (use the edgeship that wrote it)")
    check(data, REPORT_SCHEMA, "", str(p))
    return data


def _key(a: Data) -> str:
    return a.get("key") or f"{a['format']}:{a['recipe']}"


def compare_reports(old: Data, new: Data, max_latency_increase: float = 10.0) -> List[Row]:
    """Rows for every check, latency and size figure of the artifacts of both reports, then the
    same for each device section (parity and latency measured on the device by `deploy`)."""
    rows: List[Row] = []
    olds = {_key(a): a for a in old["artifacts"]}
    news = {_key(a): a for a in new["artifacts"]}
    for key, a in olds.items():
        if key not in news:
            rows.append(Row(a["path"], "artifact", None, None, "REGRESSION" if a.get("required", True) else "missing", "not in the new report"))
    for key, n in news.items():
        o = olds.get(key)
        rows += _artifact_rows(n["path"], o, n, max_latency_increase)
        if o:
            rows.append(Row(n["path"], "size bytes", o["size"], n["size"], "ok" if n["size"] <= o["size"] else "worse"))
    return rows + _device_rows(old, new, max_latency_increase)


def _artifact_rows(name: str, o: Optional[Data], n: Data, max_latency_increase: float) -> List[Row]:
    """Parity checks and p50 latency of one artifact (on the host, or on a device)."""
    rows: List[Row] = []
    required = n.get("required", True)
    old_checks = {(c["output"], c["metric"]): c for c in ((o or {}).get("parity") or {}).get("checks", [])}
    for c in (n.get("parity") or {}).get("checks", []):
        oc = old_checks.get((c["output"], c["metric"]))
        what = f"{c['output']}.{c['metric']} ({c['op']} {c['threshold']:.6g})"
        ov = oc["value"] if oc else None
        if not c["passed"]:
            status = "REGRESSION" if required else "worse"
            why = c.get("message") or "past the budget"
            if oc is not None and not oc["passed"]:
                why += " (already past it in the old report)"
        elif oc is None:
            status, why = "new", ""
        else:
            better = (c["value"] or 0) >= (ov or 0) if c["op"] == ">=" else (c["value"] or 0) <= (ov or 0)
            status = "ok" if c["value"] == ov else ("improved" if better else "worse")
            why = ""
        rows.append(Row(name, what, ov, c["value"], status, why))
    ol, nl = (o or {}).get("latency"), n.get("latency")
    if ol and nl and ol.get("measured", True) and nl.get("measured", True):
        growth = 100.0 * (nl["p50_ms"] - ol["p50_ms"]) / ol["p50_ms"] if ol["p50_ms"] > 0 else 0.0
        if growth > max_latency_increase:
            status = "REGRESSION" if required else "worse"
            why = f"p50 grew {growth:.1f}% (allowed: {max_latency_increase:g}%)"
        else:
            status, why = ("improved" if growth < 0 else "ok"), ""
        rows.append(Row(name, "latency p50 ms", ol["p50_ms"], nl["p50_ms"], status, why))
    elif nl and not nl.get("measured", True):
        rows.append(Row(name, "latency p50 ms", None, None, "ok", f"not measured: {nl.get('reason', '')}"))
    return rows


def _device_rows(old: Data, new: Data, max_latency_increase: float) -> List[Row]:
    """Device sections compared by device name; a device only in the old report is listed, not failed
    (this run may not have deployed to it), but an artifact that stopped running on a device is a regression."""
    rows: List[Row] = []
    olds = {d["device"]: d for d in old.get("devices", [])}
    news = {d["device"]: d for d in new.get("devices", [])}
    for label in olds.keys() - news.keys():
        rows.append(Row(label, "device", None, None, "missing", "not in the new report"))
    for label, d in news.items():
        if d.get("error"):
            rows.append(Row(label, "device", None, None, "missing", f"deploy failed: {d['error']}"))
            continue
        prev = {a["key"]: a for a in olds.get(label, {}).get("artifacts", []) if a.get("ran")}
        for a in d.get("artifacts", []):
            name = f"{label} {a['artifact']}"
            if a.get("ran"):
                rows += _artifact_rows(name, prev.get(a["key"]), a, max_latency_increase)
            elif a["key"] in prev:
                status = "REGRESSION" if a.get("required", True) else "worse"
                rows.append(Row(name, "ran on the device", 1, 0, status, f"no longer runs there: {a.get('reason')}"))
    return rows


def render_table_md(rows: List[Row], old_name: str, new_name: str) -> str:
    reg = [r for r in rows if r.regression]
    head = f"## edgeship compare: {'❌ ' + str(len(reg)) + ' regression(s)' if reg else '✅ no regression'}\n\n"
    head += f"Old: `{old_name}` · New: `{new_name}`\n\n"
    lines = ["| artifact | figure | old | new | change | status |", "|---|---|---:|---:|---:|---|"]
    for r in rows:
        f = lambda v: "–" if v is None else f"{v:.6g}"  # noqa: E731
        status = f"**{r.status}**" if r.regression else r.status
        if r.why:
            status += f": {r.why}"
        lines.append(f"| `{r.artifact}` | {r.what} | {f(r.old)} | {f(r.new)} | {r.change} | {status} |")
    return head + "\n".join(lines) + "\n"


def summary(rows: List[Row]) -> Tuple[int, List[str]]:
    reg = [r for r in rows if r.regression]
    return len(reg), [f"{r.artifact}: {r.what}: {r.why}" for r in reg]
