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


def render_md(data: Data) -> str:
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
    h = data["host"]
    lines += ["", f"Latency measured on the build host: {h['cpu']} ({h['cores']} cores, {h['machine']}), batch 1."]
    unmeasured = [a for a in data["artifacts"] if a.get("latency") and not a["latency"].get("measured", True)]
    for a in unmeasured:
        lines.append(f"- `{a['path']}` latency not measured: {a['latency'].get('reason', '')}")
    if data.get("training"):
        tr = data["training"]
        lines.append(f"Sample model held-out accuracy: {tr['test_accuracy']:.2%} on {tr['test_samples']} images.")
    if data["failures"]:
        lines += ["", "### What failed", ""] + [f"- {f}" for f in data["failures"]]
    if data.get("warnings"):
        lines += ["", "### Warnings", ""] + [f"- {w}" for w in data["warnings"]]
    return "\n".join(lines) + "\n"


def render_json(data: Data) -> str:
    return json.dumps(data, indent=2, default=str) + "\n"


def junit_cases(data: Data) -> List[Dict[str, Any]]:
    """One case per artifact x check (and a NaN/Inf check per output), so CI shows parity as tests."""
    cases = []
    for a in data["artifacts"]:
        cls = f"edgeship.{data['target']['name']}.{a['path']}"
        for o in a["parity"]["outputs"]:
            cases.append(
                {
                    "classname": cls,
                    "name": f"{o['name']}.finite",
                    "failure": f"{o['nonfinite']} NaN/Inf values" if o["nonfinite"] else None,
                    "required": a["required"],
                }
            )
        for c in a["parity"]["checks"]:
            msg = None
            if not c["passed"]:
                want = "at least" if c["op"] == ">=" else "at most"
                msg = f"{c['metric']} = {c['value']:.6g}, budget {want} {c['threshold']:.6g}"
            cases.append({"classname": cls, "name": f"{c['output']}.{c['metric']}", "failure": msg, "required": a["required"]})
        budget = data["target"].get("latency_budget_ms")
        lat = a.get("latency")
        if budget is not None and lat:
            if lat.get("measured", True):
                fail = None if lat["p50_ms"] <= budget else f"p50 {lat['p50_ms']:.3f} ms > {budget} ms"
                cases.append({"classname": cls, "name": "latency.p50", "failure": fail, "required": a["required"]})
            else:
                cases.append({"classname": cls, "name": "latency.p50", "skipped": lat.get("reason", "not measured"), "failure": None, "required": a["required"]})
    return cases


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


RENDERERS: Dict[str, tuple[str, Callable[[Data], str]]] = {
    "md": ("report.md", render_md),
    "json": ("report.json", render_json),
    "junit": ("junit.xml", render_junit),
}


def write_all(data: Data, folder: Path) -> List[Path]:
    paths = []
    for name, render in RENDERERS.values():
        p = Path(folder) / name
        p.write_text(render(data), encoding="utf-8")
        paths.append(p)
    return paths
