"""`edgeship validate`, `report` and `compare`: thin Click commands over validate, report and compare."""
from __future__ import annotations

from pathlib import Path
from contextlib import contextmanager
from typing import Iterator, Optional

import click

from .cli_devices import signature_options
from .errors import EdgeshipError


@click.command()
@click.argument("bundle_or_artifact", type=click.Path(exists=True, path_type=Path))
@click.option("--reference", "-r", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Reference model (.keras, .h5, .onnx, .tflite). Default: the bundle's reference outputs.")
@click.option("--artifact", "-a", "artifacts", multiple=True, help="Only this artifact of the bundle (repeatable), e.g. model_int8.tflite.")
@click.option("--inputs", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Held-out inputs (.npz named like the model inputs, optional __labels__) for a single artifact. Default: generated.")
@click.option("--target", "-t", default="arm64", show_default=True, help="Profile whose budgets apply to a single artifact.")
@click.option("--recipe", default=None, help="Recipe whose budget applies to a single artifact. Default: from its file name.")
@click.option("--explain", is_flag=True, help="Per-layer diagnosis of each quantized artifact: the layers where the error grows.")
@click.option("--report", "report_dir", type=click.Path(file_okay=False), default=None,
              help="Also write report.md/json/html and junit.xml of this validation into this folder.")
@signature_options
def validate(bundle_or_artifact, reference, artifacts, inputs, target, recipe, explain, report_dir, require_signature, allowed_signers) -> None:  # type: ignore[no-untyped-def]
    """Re-run parity of a bundle (or one .tflite/.onnx artifact) and check it against the budgets."""
    from .validate import validate_artifact, validate_bundle

    p = Path(bundle_or_artifact)
    if p.is_dir():
        data, notes = validate_bundle(p, Path(reference) if reference else None, list(artifacts), explain, allowed_signers, require_signature)
    else:
        if require_signature:
            raise EdgeshipError("--require-signature applies to a bundle folder; a single artifact file carries no signature")
        data, notes = validate_artifact(p, Path(reference) if reference else None, Path(inputs) if inputs else None, target, recipe, explain)
    for n in notes:
        click.echo(f"note: {n}", err=True)
    _print_parity(data)
    if report_dir:
        from .report import write_all

        Path(report_dir).mkdir(parents=True, exist_ok=True)
        write_all(data, Path(report_dir))
    if not data["passed"]:
        more = " …" if len(data["failures"]) > 1 else ""
        raise EdgeshipError(f"{len(data['failures'])} budget check(s) failed: {data['failures'][0] if data['failures'] else ''}{more}", exit_code=1)


def _print_parity(data) -> None:  # type: ignore[no-untyped-def]
    from rich.console import Console
    from rich.table import Table

    from .report import layer_score

    console = Console()
    table = Table(title=f"parity: {data['model']['name']} → {data['target']['name']} ({data['parity_inputs']['origin']})")
    for col in ("artifact", "max abs", "SNR dB", "cosine", "top-1 agree", "accuracy", "result"):
        table.add_column(col, justify="left" if col in ("artifact", "result") else "right", no_wrap=col == "artifact")
    for a in data["artifacts"]:
        o = a["parity"]["outputs"][0]
        pct = lambda v: "–" if v is None else f"{v:.2%}"  # noqa: E731
        table.add_row(
            a["path"], f"{o['max_abs']:.3g}", f"{o['snr_db']:.1f}", f"{o['cosine']:.6f}", pct(o["top1_agreement"]), pct(o["accuracy"]),
            "[green]pass[/green]" if a["passed"] else ("[red]FAIL[/red]" if a["required"] else "[yellow]fail (optional)[/yellow]"),
        )
    console.print(table)
    for a in data["artifacts"]:
        d = a.get("diagnosis")
        if not d:
            continue
        t = Table(title=f"{a['path']}: layers where the error grows ({d['method']}, {d['samples']} samples)")
        for col in ["#", "layer", "op", d["score_name"]] + d.get("columns", []):
            t.add_column(col, justify="left" if col in ("layer", "op") else "right")
        for i, r in enumerate(sorted(d["rows"], key=lambda r: -r["score"])[:5], 1):
            t.add_row(str(i), r["layer"], r["op"], layer_score(r["score"]), *[layer_score(r["metrics"].get(c)) for c in d.get("columns", [])])
        console.print(t)
        console.print(f"[dim]{d['score_name']}: {d['score_help']}[/dim]")
    for f in data["failures"]:
        console.print(f"[red]✗[/red] {f}")


@contextmanager
def malformed_report(where: object) -> Iterator[None]:
    """A field the schema does not pin down (deep in a diagnosis, a device's facts) that is missing
    or mistyped: one line naming it, exit 2, never a traceback."""
    try:
        yield
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
        what = f"missing field {e.args[0]!r}" if isinstance(e, KeyError) and e.args else f"{type(e).__name__}: {str(e)[:160]}"
        raise EdgeshipError(f"{where}: malformed report.json ({what}); regenerate it with 'edgeship build' or 'validate --report'", exit_code=2) from None


@click.command()
@click.argument("bundle", type=click.Path(exists=True))
@click.option("--format", "-f", "fmt", type=click.Choice(["md", "json", "junit", "html"]), default="md", show_default=True)
@click.option("--out", "-o", type=click.Path(dir_okay=False), default=None, help="Write to this file instead of stdout.")
def report(bundle: str, fmt: str, out: Optional[str]) -> None:
    """Render a bundle's report (its report.json) again as Markdown, JSON, JUnit XML or HTML."""

    from .compare import load_report
    from .report import RENDERERS

    data = load_report(Path(bundle))
    with malformed_report(bundle):
        text = RENDERERS[fmt][1](data)
    if out:
        Path(out).write_text(text, encoding="utf-8")
    else:
        click.echo(text, nl=False)


@click.command("compare")
@click.argument("old", type=click.Path(exists=True))
@click.argument("new", type=click.Path(exists=True))
@click.option("--max-latency-increase", type=click.FloatRange(min=0), default=10.0, show_default=True,
              help="Allowed growth of p50 latency per artifact, in percent.")
@click.option("--markdown", "md_out", type=click.Path(dir_okay=False), default=None,
              help="Also write the table as Markdown to this file (e.g. $GITHUB_STEP_SUMMARY; appended).")
def compare_cmd(old: str, new: str, max_latency_increase: float, md_out: Optional[str]) -> None:
    """Regression gate: fail when NEW misses a parity budget or its latency grew past the limit vs OLD."""
    from rich.console import Console
    from rich.table import Table

    from .compare import compare_reports, load_report, render_table_md, summary

    old_data, new_data = load_report(Path(old)), load_report(Path(new))
    with malformed_report(f"{old} or {new}"):
        rows = compare_reports(old_data, new_data, max_latency_increase)
    table = Table(title=f"edgeship compare: {old} → {new}")
    for col in ("artifact", "figure", "old", "new", "change", "status"):
        table.add_column(col, justify="right" if col in ("old", "new", "change") else "left")
    f = lambda v: "–" if v is None else f"{v:.6g}"  # noqa: E731
    colors = {"REGRESSION": "red", "worse": "yellow", "improved": "green"}
    for r in rows:
        st = r.status + (f": {r.why}" if r.why else "")
        c = colors.get(r.status)
        table.add_row(r.artifact, r.what, f(r.old), f(r.new), r.change, f"[{c}]{st}[/{c}]" if c else st)
    Console().print(table)
    if md_out:
        with open(md_out, "a", encoding="utf-8") as fh:
            fh.write(render_table_md(rows, old, new))
    n, reasons = summary(rows)
    if n:
        raise EdgeshipError(f"{n} regression(s): " + "; ".join(reasons[:3]) + (" …" if n > 3 else ""), exit_code=1)
    click.echo("no regression")
