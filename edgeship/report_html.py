"""report.html: the report as one self-contained page (no CDN, no external files).

Tables are rendered here from the report data; the charts (latency distribution per
artifact, error histogram, per-layer error) are drawn as inline SVG by the small script
below from the same data, embedded as JSON. The script marks the page when it is done
(``<body data-charts="done" data-charts-drawn="N">``) and records any error it meets
(``data-script-errors``), which is what the headless-browser test reads.

Add a section by appending a function (data -> HTML string, "" when it has nothing to say)
to HTML_SECTIONS; a chart by adding a draw function to the script's CHARTS table.
"""
from __future__ import annotations

import html
import json
import math
from typing import Any, Callable, List

from .report import Data, _first_output, _fmt, _size, latency_cell, layer_score

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;padding:0 1rem;color:#1b1f24}
h1{font-size:1.5rem} h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #d0d7de;padding-bottom:.2rem}
table{border-collapse:collapse;margin:.5rem 0} th,td{border:1px solid #d0d7de;padding:.25rem .5rem;text-align:right}
th:first-child,td:first-child,td.l{text-align:left} code{font-size:.92em}
.pass{color:#1a7f37;font-weight:600} .fail{color:#cf222e;font-weight:600} .opt{color:#9a6700}
.note{color:#57606a} figure{margin:1rem 0} figcaption{color:#57606a;font-size:.9em}
svg text{font:11px system-ui,sans-serif;fill:#1b1f24} .err{color:#cf222e;white-space:pre-wrap}
"""

SCRIPT = r"""
(function () {
  "use strict";
  var body = document.body;
  var errors = [];
  window.addEventListener("error", function (e) {
    errors.push(String(e.message || e));
    body.setAttribute("data-script-errors", errors.join(" | "));
  });
  var NS = "http://www.w3.org/2000/svg";
  var COLORS = ["#0969da", "#cf222e", "#1a7f37", "#8250df", "#bf8700", "#1b7c83", "#e16f24", "#6e7781"];
  var data = JSON.parse(document.getElementById("report-data").textContent);

  function el(name, attrs, parent, text) {
    var e = document.createElementNS(NS, name);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    if (parent) parent.appendChild(e);
    return e;
  }
  function svg(host, w, h) {
    return el("svg", {width: w, height: h, viewBox: "0 0 " + w + " " + h, role: "img"}, host);
  }
  function fmt(v) {
    if (v === 0) return "0";
    var a = Math.abs(v);
    return a >= 100 ? v.toFixed(0) : a >= 1 ? v.toFixed(2) : v.toPrecision(2);
  }
  function axisX(s, x0, x1, y, lo, hi, log, label) {
    el("line", {x1: x0, x2: x1, y1: y, y2: y, stroke: "#57606a"}, s);
    for (var i = 0; i <= 4; i++) {
      var v = lo + (hi - lo) * i / 4, x = x0 + (x1 - x0) * i / 4;
      el("line", {x1: x, x2: x, y1: y, y2: y + 4, stroke: "#57606a"}, s);
      el("text", {x: x, y: y + 16, "text-anchor": "middle"}, s, log ? "1e" + v.toFixed(1).replace(".0", "") : fmt(v));
    }
    el("text", {x: (x0 + x1) / 2, y: y + 32, "text-anchor": "middle"}, s, label);
  }

  // Latency: every timed run of every artifact as a dot, p50 and p90 as ticks.
  function latency(host) {
    var arts = data.artifacts.filter(function (a) {
      return a.latency && a.latency.measured !== false && (a.latency.samples_ms || []).length;
    });
    if (!arts.length) { host.textContent = "No latency was measured."; return 0; }
    // the axis ends at 2.5x the largest p90, so a few slow outliers do not squash the rest;
    // runs beyond it are drawn at the edge as open circles
    var lo = 0, hi = Math.max.apply(null, arts.map(function (a) { return a.latency.p90_ms; })) * 2.5;
    var L = 170, R = 780, row = 34;
    var s = svg(host, 900, arts.length * row + 60);
    var x = function (v) { return L + (R - L) * (Math.min(v, hi) - lo) / (hi - lo); };
    var n = 0;
    arts.forEach(function (a, i) {
      var y = 20 + i * row, c = COLORS[i % COLORS.length];
      el("text", {x: L - 8, y: y + 4, "text-anchor": "end"}, s, a.path);
      a.latency.samples_ms.forEach(function (v, j) {
        var out = v > hi;
        el("circle", {cx: x(v), cy: y + ((j * 7919) % 13) - 6, r: out ? 3 : 2.2, fill: out ? "none" : c,
                      stroke: out ? c : "none", "fill-opacity": 0.45}, s); n++;
      });
      [["p50_ms", 12], ["p90_ms", 8]].forEach(function (p) {
        var px = x(a.latency[p[0]]);
        el("line", {x1: px, x2: px, y1: y - p[1], y2: y + p[1], stroke: "#1b1f24", "stroke-width": 2}, s);
      });
      el("text", {x: R + 10, y: y + 4}, s, "p50 " + fmt(a.latency.p50_ms) + " ms");
    });
    axisX(s, L, R, arts.length * row + 12, lo, hi, false, "latency per run (ms, batch 1); ticks: p50 (long), p90 (short); open circles: slower than the axis");
    return n;
  }

  // Error histogram: |reference − artifact| over log-spaced bins, one line per artifact.
  function histogram(host) {
    var arts = data.artifacts.filter(function (a) { return (a.parity.outputs[0].histogram || {}).counts; });
    if (!arts.length) { host.textContent = "No error histogram in this report."; return 0; }
    var edges = arts[0].parity.outputs[0].histogram.edges.map(function (e) { return Math.log10(e); });
    var lo = edges[0], hi = edges[edges.length - 1], L = 60, R = 700, T = 15, B = 215;
    var fracs = arts.map(function (a) {
      var h = a.parity.outputs[0].histogram;
      var total = h.counts.reduce(function (p, c) { return p + c; }, 0) + h.below + h.above;
      return h.counts.map(function (c) { return total ? c / total : 0; });
    });
    var top = Math.max.apply(null, fracs.map(function (f) { return Math.max.apply(null, f); })) || 1;
    var s = svg(host, 900, 270);
    var x = function (v) { return L + (R - L) * (v - lo) / (hi - lo); };
    var y = function (f) { return B - (B - T) * f / top; };
    el("line", {x1: L, x2: L, y1: T, y2: B, stroke: "#57606a"}, s);
    el("text", {x: L - 6, y: T + 4, "text-anchor": "end"}, s, (100 * top).toFixed(0) + "%");
    el("text", {x: L - 6, y: B, "text-anchor": "end"}, s, "0");
    var n = 0;
    fracs.forEach(function (f, i) {
      var pts = [], c = COLORS[i % COLORS.length];
      f.forEach(function (v, b) {
        pts.push(x((edges[b] + edges[b + 1]) / 2).toFixed(1) + "," + y(v).toFixed(1));
      });
      el("polyline", {points: pts.join(" "), fill: "none", stroke: c, "stroke-width": 2}, s); n++;
      el("rect", {x: R + 20, y: T + i * 18, width: 10, height: 10, fill: c}, s);
      el("text", {x: R + 36, y: T + 9 + i * 18}, s, arts[i].path);
    });
    axisX(s, L, R, B, lo, hi, true, "absolute error (log scale); share of output values per bin");
    return n;
  }

  // Per-layer error: one bar per layer in graph order, the worst five in red.
  function layers(host) {
    var diags = data.artifacts.filter(function (a) { return a.diagnosis && a.diagnosis.rows.length; });
    if (!diags.length) {
      host.textContent = "No per-layer diagnosis: it runs when a quantized artifact misses its budget (or with `edgeship validate --explain`).";
      return 0;
    }
    var n = 0;
    diags.forEach(function (a) {
      var d = a.diagnosis, rows = d.rows, fig = document.createElement("figure");
      host.appendChild(fig);
      // bars grow from the axis floor (0, or a bit below the lowest score when scores are dB
      // below zero); a layer that added no error at all (the -200 floor) has no bar
      var scores = rows.map(function (r) { return r.score; }).filter(function (v) { return v > -199; });
      var least = Math.min.apply(null, scores.concat([0]));
      var lo = least < 0 ? Math.floor((least - 5) / 10) * 10 : 0;
      var hi = Math.max.apply(null, scores.concat([lo + 1]));
      if (hi <= lo) hi = lo + 1;
      var worst = rows.slice().sort(function (p, q) { return q.score - p.score; }).slice(0, 5);
      var L = 280, R = 760, row = 20, s = svg(fig, 900, rows.length * row + 50);
      var x = function (v) { return L + (R - L) * (Math.max(v, lo) - lo) / (hi - lo); };
      rows.forEach(function (r, i) {
        var y = 8 + i * row, bad = worst.indexOf(r) >= 0, label = r.layer + " (" + r.op + ")";
        if (label.length > 40) label = label.slice(0, 39) + "…";
        el("text", {x: L - 8, y: y + 12, "text-anchor": "end"}, s, label);
        if (r.score > -199) {
          el("rect", {x: L, y: y + 2, width: Math.max(1, x(r.score) - L), height: row - 6,
                      fill: bad ? "#cf222e" : "#8c959f", "data-layer": r.layer}, s);
        }
        n++;
        el("text", {x: R + 6, y: y + 12}, s, r.score <= -199 ? "none" : fmt(r.score));
      });
      axisX(s, L, R, rows.length * row + 12, lo, hi, false, d.score_name);
      var cap = document.createElement("figcaption");
      cap.textContent = a.path + ": " + d.method + " on " + d.samples + " samples. " + d.score_help + ".";
      fig.appendChild(cap);
    });
    return n;
  }

  var CHARTS = {"chart-latency": latency, "chart-errors": histogram, "chart-layers": layers};
  var drawn = 0;
  Object.keys(CHARTS).forEach(function (id) {
    var host = document.getElementById(id);
    try {
      var marks = CHARTS[id](host);
      host.setAttribute("data-marks", String(marks));
      if (marks > 0) drawn++;
    } catch (e) {
      errors.push(id + ": " + e);
      host.innerHTML = "<p class='err'>chart failed: " + String(e).replace(/</g, "&lt;") + "</p>";
    }
  });
  if (errors.length) body.setAttribute("data-script-errors", errors.join(" | "));
  body.setAttribute("data-charts-drawn", String(drawn));
  body.setAttribute("data-charts", "done");
})();
"""


def _e(v: object) -> str:
    return html.escape(str(v), quote=True)


def _summary(data: Data) -> str:
    t, m = data["target"], data["model"]
    head = "<tr>" + "".join(
        f"<th>{h}</th>" for h in ("artifact", "size", "p50 ms", "p90 ms", "max abs", "SNR dB", "cosine", "top-1 agree", "accuracy", "result")
    ) + "</tr>"
    rows = []
    for a in data["artifacts"]:
        o = _first_output(a)
        res = '<span class="pass">pass</span>' if a["passed"] else (
            '<span class="fail">FAIL</span>' if a["required"] else '<span class="opt">fail (optional)</span>'
        )
        pct = lambda v: "–" if v is None else f"{v:.2%}"  # noqa: E731
        rows.append(
            f"<tr><td><code>{_e(a['path'])}</code></td><td>{_size(a['size'])}</td><td>{latency_cell(a, 'p50_ms')}</td>"
            f"<td>{latency_cell(a, 'p90_ms')}</td><td>{_fmt(o['max_abs'])}</td><td>{_fmt(o['snr_db'], '.1f')}</td>"
            f"<td>{_fmt(o['cosine'], '.6f')}</td><td>{pct(o['top1_agreement'])}</td><td>{pct(o['accuracy'])}</td><td>{res}</td></tr>"
        )
    status = '<span class="pass">all required artifacts pass</span>' if data["passed"] else '<span class="fail">parity budget missed</span>'
    return (
        f"<h1>edgeship: {_e(m['name'])} → {_e(t['name'])} — {status}</h1>"
        f"<p>Model <code>{_e(m['name'])}</code> ({_e(m['kind'])}, sha256 <code>{_e(m['sha256'][:12])}</code>), target "
        f"<b>{_e(t['name'])}</b> ({_e(t['description'])}). Parity inputs: {_e(data['parity_inputs']['origin'])}. "
        f"Report created {_e(data.get('created', ''))} by edgeship {_e(data.get('edgeship_version', ''))}.</p>"
        f"<table>{head}{''.join(rows)}</table>"
    )


def _checks(data: Data) -> str:
    rows = []
    for a in data["artifacts"]:
        for c in a["parity"]["checks"]:
            cls, word = ("pass", "pass") if c["passed"] else (("fail", "FAIL") if a["required"] else ("opt", "fail"))
            value = "–" if c["value"] is None else f"{c['value']:.6g}"
            rows.append(
                f"<tr><td><code>{_e(a['path'])}</code></td><td class='l'>{_e(c['output'])}</td><td class='l'>{_e(c['metric'])}</td>"
                f"<td>{value}</td><td>{_e(c['op'])} {c['threshold']:.6g}</td><td class='{cls}'>{word}</td></tr>"
            )
    head = "<tr><th>artifact</th><th>output</th><th>metric</th><th>value</th><th>budget</th><th>result</th></tr>"
    return f"<h2>Checks</h2><table>{head}{''.join(rows)}</table>"


def _charts(data: Data) -> str:
    return (
        "<h2>Latency per artifact</h2><div id='chart-latency' class='chart'></div>"
        "<h2>Error histogram</h2><div id='chart-errors' class='chart'></div>"
        "<h2>Per-layer error</h2><div id='chart-layers' class='chart'></div>"
    )


def _layer_tables(data: Data) -> str:
    out = []
    for a in data["artifacts"]:
        d = a.get("diagnosis")
        if not d:
            continue
        cols = d.get("columns", [])
        head = "<tr><th>#</th><th>layer</th><th>op</th>" + "".join(f"<th>{_e(c)}</th>" for c in [d["score_name"]] + cols) + "</tr>"
        rows = [
            f"<tr><td>{i}</td><td class='l'><code>{_e(r['layer'])}</code></td><td class='l'>{_e(r['op'])}</td>"
            f"<td>{layer_score(r['score'])}</td>" + "".join(f"<td>{layer_score(r['metrics'].get(c))}</td>" for c in cols) + "</tr>"
            for i, r in enumerate(sorted(d["rows"], key=lambda r: -r["score"])[:5], 1)
        ]
        out.append(f"<h2>Where <code>{_e(a['path'])}</code> loses accuracy</h2><table>{head}{''.join(rows)}</table>")
    return "".join(out)


def _notes(data: Data) -> str:
    parts = []
    if data.get("failed_artifacts"):
        parts.append(
            "<h2>Artifacts that could not be built</h2><ul>"
            + "".join(
                f"<li><code>{_e(f['file'])}</code> ({'required' if f['required'] else 'optional'}): {_e(f['reason'])}</li>"
                for f in data["failed_artifacts"]
            )
            + "</ul>"
        )
    if data.get("failures"):
        parts.append("<h2>What failed</h2><ul>" + "".join(f"<li>{_e(f)}</li>" for f in data["failures"]) + "</ul>")
    if data.get("warnings"):
        parts.append("<h2>Warnings</h2><ul>" + "".join(f"<li>{_e(w)}</li>" for w in data["warnings"]) + "</ul>")
    h = data.get("host") or {}
    parts.append(
        f"<p class='note'>Latency measured on the build host: {_e(h.get('cpu', '?'))} ({_e(h.get('cores', '?'))} cores, "
        f"{_e(h.get('machine', '?'))}), batch 1.</p>"
    )
    return "".join(parts)


def _devices(data: Data) -> str:
    """One table per device `edgeship deploy` ran on (the same data as report.md's device sections)."""
    out = []
    for d in data.get("devices", []):
        ok = '<span class="pass">pass</span>' if d.get("passed") else '<span class="fail">failed</span>'
        out.append(f"<h2>On device <code>{_e(d['device'])}</code> — {ok}</h2>")
        if d.get("error"):
            out.append(f"<p>Could not run there: {_e(d['error'])}</p>")
            continue
        f = d.get("facts", {})
        out.append(f"<p>{_e(f.get('cpu', '?'))} ({_e(f.get('cores', '?'))} cores, {_e(f.get('machine', '?'))}), {_e(f.get('os', ''))}</p>")
        head = "<tr>" + "".join(f"<th>{h}</th>" for h in ("artifact", "runtime", "p50 ms", "p90 ms", "max abs", "SNR dB", "result")) + "</tr>"
        rows = []
        for a in d.get("artifacts", []):
            if not a.get("ran"):
                rows.append(f"<tr><td><code>{_e(a['artifact'])}</code></td><td class='l' colspan='5'>not run: {_e(a.get('reason', ''))}</td><td>–</td></tr>")
                continue
            lat, o = a.get("latency") or {}, a["parity"]["outputs"][0]
            res = '<span class="pass">pass</span>' if a.get("passed") else '<span class="fail">FAIL</span>'
            rows.append(
                f"<tr><td><code>{_e(a['artifact'])}</code></td><td class='l'>{_e(a.get('backend') or '')}</td>"
                + (  # a device without the profile's accelerator: said, never a CPU time (see runner bench)
                    f"<td>{_fmt(lat.get('p50_ms'), '.3f')}</td><td>{_fmt(lat.get('p90_ms'), '.3f')}</td>"
                    if lat and lat.get("measured", True)
                    else f"<td colspan='2' title='{_e(lat.get('reason', ''))}'>not measured</td>"
                )
                + f"<td>{_fmt(o['max_abs'])}</td><td>{_fmt(o['snr_db'], '.1f')}</td><td>{res}</td></tr>"
            )
        out.append(f"<table>{head}{''.join(rows)}</table>")
    return "".join(out)


HTML_SECTIONS: List[Callable[[Data], str]] = [_summary, _notes, _charts, _layer_tables, _devices, _checks]


def _finite(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    return v


def _embed(data: Data) -> str:
    """JSON that is safe inside <script> (no '<' at all) and that JSON.parse accepts (no NaN)."""
    return json.dumps(_finite(data), default=str, allow_nan=False).replace("<", "\\u003c")


def render_html(data: Data) -> str:
    title = f"edgeship report: {data['model']['name']} → {data['target']['name']}"
    body = "".join(section(data) for section in HTML_SECTIONS)
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{_e(title)}</title>"
        f"<style>{CSS}</style></head><body data-charts='pending'>{body}"
        f"<script id='report-data' type='application/json'>{_embed(data)}</script>"
        f"<script>{SCRIPT}</script></body></html>\n"
    )
