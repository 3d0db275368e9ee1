"""Reports, all rendered from the same plain data (the contents of report.json)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional
from xml.etree import ElementTree as ET

Data = Dict[str, Any]


def _fmt(v: Optional[float], spec: str = ".4g") -> str:
    return "–" if v is None else format(v, spec)


def _size(n: int) -> str:
    return f"{n / 1024:.1f} KiB" if n < 1 << 20 else f"{n / (1 << 20):.2f} MiB"


def _first_output(a: Data) -> Data:
    return a["parity"]["outputs"][0]


def latency_cell(a: Data, field: str) -> str:
    lat = a.get("latency")
    if not lat:
        return "not measured"
    if not lat.get("measured", True):
        return "not measured"
    return f"{lat[field]:.3f}"


def _md_summary(data: Data) -> List[str]:
    t = data["target"]
    m = data["model"]
    status = "✅ all required artifacts pass" if data["passed"] else "❌ parity budget missed"
    lines = [
        f"## edgeship: {m['name']} → {t['name']} — {status}",
        "",
        f"Model `{m['name']}` ({m['kind']}, sha256 `{m['sha256'][:12]}`), target **{t['name']}** ({t['description']}). "
        f"Parity inputs: {data['parity_inputs']['origin']}.",
        "",
        "| artifact | size | p50 ms | p90 ms | max abs | SNR dB | cosine | top-1 agree | accuracy | result |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for a in data["artifacts"]:
        o = _first_output(a)
        res = "pass" if a["passed"] else ("**FAIL**" if a["required"] else "fail (optional)")
        lines.append(
            f"| `{a['path']}` | {_size(a['size'])} | {latency_cell(a, 'p50_ms')} | {latency_cell(a, 'p90_ms')} | "
            f"{_fmt(o['max_abs'])} | {_fmt(o['snr_db'], '.1f')} | {_fmt(o['cosine'], '.6f')} | "
            f"{_fmt(o['top1_agreement'], '.2%') if o['top1_agreement'] is not None else '–'} | "
            f"{_fmt(o['accuracy'], '.2%') if o['accuracy'] is not None else '–'} | {res} |"
        )
    if data.get("build"):
        from .measure import breakdown

        lines += ["", f"Build: {breakdown(data['build'], top=len(data['build'].get('by_stage', {})))}."]
    return lines


def _md_host(data: Data) -> List[str]:
    h = data.get("host")
    lines = [f"Latency measured on the build host: {h['cpu']} ({h['cores']} cores, {h['machine']}), batch 1."] if h else []
    unmeasured = [a for a in data["artifacts"] if a.get("latency") and not a["latency"].get("measured", True)]
    for a in unmeasured:
        lines.append(f"- `{a['path']}` latency not measured: {a['latency'].get('reason', '')}")
    by_reason: Dict[str, List[str]] = {}
    for key, why in (data["target"].get("not_built") or {}).items():
        by_reason.setdefault(why, []).append(f"`{key}`")
    if by_reason:
        lines += ["", "### Not built for this target", ""] + [f"- {', '.join(k)}: {why}" for why, k in by_reason.items()]
    if data.get("training"):
        tr = data["training"]
        lines.append(f"Sample model held-out accuracy: {tr['test_accuracy']:.2%} on {tr['test_samples']} held-out samples.")
    return lines


def layer_score(v: Optional[float]) -> str:
    """A per-layer score for a table: the floor value (no growth at all) reads as 'none'."""
    if v is None:
        return "–"
    return "none" if v <= -199.0 else f"{v:.3g}"


def _md_layers(data: Data) -> List[str]:
    lines: List[str] = []
    for a in data["artifacts"]:
        d = a.get("diagnosis")
        if not d:
            continue
        cols = d.get("columns", [])
        lines += [
            f"### Where `{a['path']}` loses accuracy, layer by layer",
            "",
            f"{d['method']} on {d['samples']} samples; {d['score_name']}: {d['score_help']}.",
            "",
            "| # | layer | op | " + " | ".join([d["score_name"]] + cols) + " |",
            "|---:|---|---|" + "---:|" * (1 + len(cols)),
        ]
        worst = sorted(d["rows"], key=lambda r: -r["score"])[:5]
        for i, r in enumerate(worst, 1):
            extra = " | ".join(layer_score(r["metrics"].get(c)) for c in cols)
            lines.append(f"| {i} | `{r['layer']}` | {r['op']} | {layer_score(r['score'])} | {extra} |")
        lines.append("")
    return lines


def _md_not_built(data: Data) -> List[str]:
    lost = data.get("failed_artifacts") or []
    if not lost:
        return []
    return ["### Artifacts that could not be built", ""] + [
        f"- `{f['file']}` ({'required' if f['required'] else 'optional'}): {f['reason']}" for f in lost
    ]


def _md_failures(data: Data) -> List[str]:
    return ["### What failed", ""] + [f"- {f}" for f in data["failures"]] if data["failures"] else []


def _md_warnings(data: Data) -> List[str]:
    return ["### Warnings", ""] + [f"- {w}" for w in data["warnings"]] if data.get("warnings") else []


# report.md is these sections in order, blank line between; add a section by appending a
# function of the report data that returns its lines ([] when it has nothing to say).
MD_SECTIONS: List[Callable[[Data], List[str]]] = [
    _md_summary, _md_not_built, _md_host, _md_layers, _md_failures, _md_warnings, lambda data: devices_md(data)
]


def render_md(data: Data) -> str:
    parts = [section(data) for section in MD_SECTIONS]
    return "\n\n".join("\n".join(p).strip("\n") for p in parts if p) + "\n"


def render_json(data: Data) -> str:
    return json.dumps(data, indent=2, default=str) + "\n"


def _check_message(c: Data) -> str:
    if c.get("message"):
        return c["message"]
    want = "at least" if c["op"] == ">=" else "at most"
    return f"{c['output']}: {c['metric']} = {c['value']:.6g}, budget {want} {c['threshold']:.6g}"


def junit_cases(data: Data) -> List[Dict[str, Any]]:
    """One case per artifact x check (every output has a NaN/Inf check), so CI shows parity as tests."""
    cases = []
    for f in data.get("failed_artifacts") or []:  # a lost artifact is a failed test, not a missing one
        msg = f"not built: {f['reason']}"
        cases.append({"classname": f"edgeship.{data['target']['name']}.{f['file']}", "name": "build", "failure": msg, "required": f["required"]})
    for a in data["artifacts"]:
        cls = f"edgeship.{data['target']['name']}.{a['path']}"
        for c in a["parity"]["checks"]:
            msg = None if c["passed"] else _check_message(c)
            cases.append({"classname": cls, "name": f"{c['output']}.{c['metric']}", "failure": msg, "required": a["required"]})
        budget = data["target"].get("latency_budget_ms")
        lat = a.get("latency")
        if budget is not None and lat:
            if lat.get("measured", True):
                fail = None if lat["p50_ms"] <= budget else f"p50 {lat['p50_ms']:.3f} ms > {budget} ms"
                cases.append({"classname": cls, "name": "latency.p50", "failure": fail, "required": a["required"]})
            else:
                cases.append({"classname": cls, "name": "latency.p50", "skipped": lat.get("reason", "not measured"), "failure": None, "required": a["required"]})
    return cases + device_junit_cases(data)


def render_junit(data: Data) -> str:
    cases = junit_cases(data)
    failures = sum(1 for c in cases if c["failure"] and c["required"])
    skipped = sum(1 for c in cases if c.get("skipped"))
    suite = ET.Element(
        "testsuite",
        name=f"edgeship parity {data['model']['name']} {data['target']['name']}",
        tests=str(len(cases)),
        failures=str(failures),
        errors="0",
        skipped=str(skipped),
    )
    for c in cases:
        el = ET.SubElement(suite, "testcase", classname=c["classname"], name=c["name"])
        if c.get("skipped"):
            ET.SubElement(el, "skipped", message=c["skipped"])
        elif c["failure"] and c["required"]:
            ET.SubElement(el, "failure", message=c["failure"]).text = c["failure"]
        elif c["failure"]:
            ET.SubElement(el, "system-out").text = f"optional artifact: {c['failure']}"
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


# --------------------------------------------------------------------------- devices (edgeship deploy)


def devices_md(data: Data) -> List[str]:
    """One section per device `edgeship deploy` ran on: its facts, latency and parity there."""
    lines: List[str] = []
    budget_ms = data["target"].get("latency_budget_ms")
    for d in data.get("devices", []):
        ok = "✅ pass" if d.get("passed") else "❌ failed"
        lines += ["", f"### On device `{d['device']}` — {ok}", ""]
        if d.get("error"):
            lines.append(f"Could not run there: {d['error']}")
            continue
        f = d["facts"]
        board = f" — {f['board']}" if f.get("board") else ""
        lines.append(
            f"{f['cpu']}{board} ({f['cores']} cores, {f['machine']}, {f.get('memory_mb') or '?'} MiB), {f['os']}; "
            f"Python {f['python']}, NumPy {f['numpy']}; {d.get('threads') or 'default'} threads, batch 1."
        )
        if f.get("emulated"):
            lines += ["", f"**Emulated**: {f['emulated']}. Parity ran on the {f['machine']} runtime's own kernels; latency is not the device's."]
        lines += [
            "",
            "| artifact | runtime | load ms | p50 ms | p90 ms | p99 ms | peak MiB | max abs | SNR dB | top-1 agree | vs host max abs | result |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for a in d["artifacts"]:
            if not a.get("ran"):
                lines.append(f"| `{a['artifact']}` | not run: {a.get('reason', '')} (`{a.get('install') or ''}`) | – | – | – | – | – | – | – | – | – | {'**FAIL**' if a['required'] else 'skipped'} |")
                continue
            lat = a.get("latency") or {}
            o = a["parity"]["outputs"][0]
            measured = bool(lat) and lat.get("measured", True)
            slow = budget_ms is not None and measured and lat["p50_ms"] > budget_ms
            res = "pass" if a["passed"] and not slow else ("**FAIL**" if a["required"] else "fail (optional)")
            cell = (lambda k, spec: _fmt(lat.get(k), spec)) if measured else (lambda k, spec: "not measured")
            lines.append(
                f"| `{a['artifact']}` | {a.get('backend') or ''} | {cell('load_ms', '.2f')} | {cell('p50_ms', '.3f')} | "
                f"{cell('p90_ms', '.3f')} | {cell('p99_ms', '.3f')} | {cell('peak_rss_mb', '.1f')} | "
                f"{_fmt(o['max_abs'])} | {_fmt(o['snr_db'], '.1f')} | "
                f"{_fmt(o['top1_agreement'], '.2%') if o['top1_agreement'] is not None else '–'} | {_fmt(a.get('max_abs_vs_host'))} | {res} |"
            )
        lines += vs_host_md(d, data)
        notes = [f"- `{a['artifact']}` latency not measured: {a['latency'].get('reason', '')}" for a in d["artifacts"] if a.get("ran") and a.get("latency") and not a["latency"].get("measured", True)]
        notes += [f"- `{a['artifact']}` parity {a['note']}" for a in d["artifacts"] if a.get("note")]
        if notes or d.get("failures"):
            lines += [""] + notes + [f"- {x}" for x in d.get("failures", [])]
    return lines


def vs_host_text(v: Data) -> str:
    """How a device's outputs compare with the build host's: 'identical' or by how much they differ."""
    if v.get("identical"):
        return "identical"
    top1 = f", top-1 agreement {v['top1_agreement']:.2%}" if v.get("top1_agreement") is not None else ""
    return f"differs: max abs {_fmt(v['max_abs'])}{top1}, {v['differing_values']} of {v['values']} values"


def vs_host_md(d: Data, data: Data) -> List[str]:
    """The device's outputs against the build host's, per artifact: a difference between architectures is shown, not hidden."""
    cmp = [a for a in d["artifacts"] if a.get("ran") and a.get("vs_host")]
    if not cmp:
        return []
    host = data.get("host") or {}
    parts = [f"`{a['artifact']}` {vs_host_text(a['vs_host'])}" for a in cmp]
    return [
        "",
        f"**Against the build host's outputs** ({host.get('machine', '?')}, same inputs, `parity/host_*.npz`) on {d['facts']['machine']}: "
        + "; ".join(parts)
        + ". The result column judges the device's outputs against the reference with the target's budgets; this comparison is shown, not judged.",
    ]


def device_junit_cases(data: Data) -> List[Dict[str, Any]]:
    """Device parity checks as test cases too: classname edgeship.<target>.device.<device>.<artifact>."""
    cases: List[Dict[str, Any]] = []
    for d in data.get("devices", []):
        base = f"edgeship.{data['target']['name']}.device.{d['device']}"
        if d.get("error"):
            cases.append({"classname": base, "name": "deploy", "failure": d["error"], "required": True})
            continue
        for a in d["artifacts"]:
            cls = f"{base}.{a['artifact']}"
            if not a.get("ran"):
                cases.append({"classname": cls, "name": "run", "failure": f"{a.get('reason')}: {a.get('install')}", "required": a["required"]})
                continue
            for c in a["parity"]["checks"]:
                msg = None if c["passed"] else _check_message(c)
                cases.append({"classname": cls, "name": f"{c['output']}.{c['metric']}", "failure": msg, "required": a["required"]})
            budget, lat = data["target"].get("latency_budget_ms"), a.get("latency")
            if budget is not None and lat and not lat.get("measured", True):
                cases.append({"classname": cls, "name": "latency.p50", "skipped": lat.get("reason", "not measured"), "failure": None, "required": a["required"]})
            elif budget is not None and lat:
                fail = None if lat["p50_ms"] <= budget else f"p50 {lat['p50_ms']:.3f} ms > {budget} ms on the device"
                cases.append({"classname": cls, "name": "latency.p50", "failure": fail, "required": a["required"]})
    return cases


RENDERERS: Dict[str, tuple[str, Callable[[Data], str]]] = {
    "md": ("report.md", render_md),
    "json": ("report.json", render_json),
    "junit": ("junit.xml", render_junit),
    "html": ("report.html", lambda data: _html().render_html(data)),
}


def _html():  # report_html is larger; imported when used
    from . import report_html

    return report_html


def write_all(data: Data, folder: Path) -> List[Path]:
    paths = []
    for name, render in RENDERERS.values():
        p = Path(folder) / name
        p.write_text(render(data), encoding="utf-8")
        paths.append(p)
    return paths
