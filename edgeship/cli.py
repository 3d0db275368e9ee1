"""The `edgeship` command: thin Click commands over library calls.

Heavy libraries (TensorFlow, onnx, OpenCV) are imported inside the commands that use
them, so `edgeship --help` stays instant.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Optional

import click

from . import __version__
from .cli_inputs import input_options, pop_inputs
from .errors import EXIT_INTERRUPTED, EdgeshipError

EXIT_CODES_HELP = """\b
Exit codes:
  0  success: every required artifact met its budgets
  1  a parity or latency budget was missed, or a regression was found
  2  bad input: arguments, target profile, model file or data
  3  a converter could not produce an artifact
  4  a device or runtime is missing or unreachable
  70 internal error (a bug): one line names the stage and the log file with the traceback
  130 interrupted"""


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "2")


@click.group(epilog=EXIT_CODES_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgeship")
@click.option("--debug", is_flag=True, help="On an internal error, show the traceback here (also EDGESHIP_DEBUG=1); accepted after the command, too.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Quantize, convert, validate and bundle a model for an edge device."""
    from .runner.internal_error import set_stage

    _quiet_tensorflow()
    set_stage(ctx.invoked_subcommand or "edgeship")


@cli.command()
@click.option(
    "--target", "-t", default="arm64", show_default=True,
    help="Target profile(s): a built-in name, a path to your own .toml, a comma-separated list, or 'all' "
    "(see `edgeship targets list`). Several targets share conversions and get one bundle each.",
)
@click.option("--sample", default="digits", show_default=True, help="Built-in sample model used when --model is not given.")
@click.option("--out", "-o", default=None, help="Bundle folder (one target) or parent folder of the bundles (several). Default: dist/<model>-<target>.")
@click.option("--runs", type=click.IntRange(min=1, max=1_000_000), default=None, help="Timed latency runs per artifact (default: the profile's).")
@click.option("--retrain", is_flag=True, help="Train the sample model again even if a cached one matches.")
@click.option("--quiet", "-q", is_flag=True, help="No progress output; only the summary.")
@click.option("--sign-key", default=None, envvar="EDGESHIP_SIGN_KEY", metavar="KEY",
              help="Sign each bundle's manifest with this OpenSSH private key (ssh-keygen -Y sign), e.g. ~/.ssh/id_ed25519. Env: EDGESHIP_SIGN_KEY.")
@click.option("--prune", "prune", type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True), default=None, metavar="SPARSITY",
              help="Magnitude-prune the Keras model to this fraction of zero weights (e.g. 0.8), fine-tuning on the training data, then build it.")
@input_options
def build(target: str, sample: str, out: Optional[str], runs: Optional[int], retrain: bool, quiet: bool, sign_key: Optional[str], prune: Optional[float], **inputs: Any) -> None:
    """Train or load a model, convert and quantize it for TARGET, prove parity, time it, and bundle it."""
    from .build import run_builds
    from .progress import Progress

    progress = Progress(enabled=not quiet)
    given = pop_inputs(inputs)
    loaded = report = None
    if prune is not None:
        from .compress import pruned_source

        source, dataset, training, report = pruned_source(given, sample, retrain, prune, progress)
        loaded = (source, dataset, training)
    results = run_builds(
        target, out=out, sample=sample, retrain=retrain, runs=runs or 0, progress=progress, inputs=given, loaded=loaded, sign_key=sign_key,
    )
    for result in results:
        _print_summary(result)
        if report is not None:
            from .cli_compress import print_pruning

            print_pruning(result, report)
    failed = [r for r in results if not r.passed]
    if failed:
        lost = sum(1 for r in failed for f in r.failed.values() if f.required)
        checks = sum(len(r.failures) for r in failed) - lost
        what = [f"{checks} budget check(s) failed for required artifacts"] if checks else []
        what += [f"{lost} required artifact(s) could not be built"] if lost else []
        raise EdgeshipError(
            " and ".join(what) + "; see "
            + ", ".join(f"{r.bundle}/report.md" for r in failed),
            exit_code=1,
        )


def _print_summary(result) -> None:  # type: ignore[no-untyped-def]
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{result.source.name} → {result.target.name}  ({result.bundle})")
    for col in ("artifact", "size KiB", "p50 ms", "p90 ms", "max abs", "SNR dB", "top-1 agree", "result"):
        table.add_column(col, justify="left" if col in ("artifact", "result") else "right", no_wrap=col == "artifact")
    for a in result.artifacts:
        p = result.parity[a.key]
        o = p.outputs[0]
        lat = result.latency.get(a.key)
        ok = result.artifact_passed(a)
        table.add_row(
            a.filename,
            f"{a.size / 1024:.1f}",
            f"{lat.p50_ms:.3f}" if lat and lat.measured else "not measured",
            f"{lat.p90_ms:.3f}" if lat and lat.measured else "not measured",
            f"{o.max_abs:.3g}",
            f"{o.snr_db:.1f}",
            f"{o.top1_agreement:.2%}" if o.top1_agreement is not None else "–",
            "[green]pass[/green]" if ok else ("[red]FAIL[/red]" if a.required else "[yellow]fail (optional)[/yellow]"),
        )
    console = Console() if sys.stdout.isatty() else Console(width=130)  # logs: do not squeeze to 80
    console.print(table)
    for why, keys in result.target.skipped_by_reason().items():
        console.print(f"[yellow]–[/yellow] {', '.join(keys)} not built for {result.target.name}: {why}")
    for a in result.artifacts:
        lat = result.latency.get(a.key)
        if lat is not None and not lat.measured:
            console.print(f"[yellow]–[/yellow] {a.filename} latency not measured: {lat.reason}")
    for f in result.failures:
        console.print(f"[red]✗[/red] {f}")
    info = result.build_info()
    if info:
        from .measure import breakdown

        reused = f"; reused from an earlier target: {len(info['reused'])} artifact(s)" if info.get("reused") else ""
        console.print(f"[dim]build: {breakdown(info, top=len(info['by_stage']))}{reused}[/dim]")
    for w in result.warnings:  # again after the table: no data, skipped artifacts and skipped images must be seen
        console.print(f"[bold yellow]warning:[/bold yellow] {w}")


@cli.command()
@click.argument("bundle", type=click.Path(exists=True, file_okay=False))
@click.option("--key", "-k", required=True, metavar="KEY", help="OpenSSH private key, e.g. ~/.ssh/id_ed25519 (a passphrase needs ssh-agent).")
def sign(bundle: str, key: str) -> None:
    """Sign BUNDLE's manifest (ssh-keygen -Y sign, namespace edgeship-bundle) into manifest.json.sig."""
    from pathlib import Path

    from .bundle import sign as sign_bundle, verify

    changed = verify(Path(bundle))
    if changed:  # a signature vouches for the files: never sign ones that are not as the manifest lists
        raise EdgeshipError("; ".join(f"{k}: {v}" for k, v in changed.items()) + ": not signing a bundle that is not as built", exit_code=1)
    click.echo(f"signed: {sign_bundle(Path(bundle), key)}")


@cli.command()
@click.option("--sample", default="digits", show_default=True, help="Which built-in sample model to train.")
@click.option("--retrain", is_flag=True, help="Ignore the cache and train again.")
def train(sample: str, retrain: bool) -> None:
    """Train a built-in sample model (cached by recipe and data) and report its held-out accuracy."""
    from .progress import Progress
    from .train import train_sample

    _, _, metrics = train_sample(sample, retrain=retrain, progress=Progress())
    state = "cached" if metrics.get("cached") else f"trained in {metrics['train_seconds']} s"
    click.echo(
        f"{sample}: held-out accuracy {metrics['test_accuracy']:.2%} on {metrics['test_samples']} held-out samples "
        f"({state}); model at {metrics['cache_path']}"
    )


@cli.group()
def setup() -> None:
    """Install optional converters whose pins clash with edgeship's, each in its own environment."""


@setup.command("onnx2tf")
@click.option("--into", type=click.Path(file_okay=False), default=None, help="Folder of the venv (default: the edgeship cache).")
@click.option("--force", is_flag=True, help="Rebuild the environment even if it is complete.")
def setup_onnx2tf(into: Optional[str], force: bool) -> None:
    """onnx2tf (TensorFlow 2.19) for TFLite artifacts from ONNX and PyTorch models; needs PyPI, once."""
    from pathlib import Path

    from rich.console import Console

    from .convert import onnx2tf

    dest = Path(into) if into else onnx2tf.default_env()
    with Console(stderr=True).status(f"installing onnx2tf {onnx2tf.VERSION} and TensorFlow 2.19 into {dest} (about a minute)"):
        python = onnx2tf.setup(dest, force=force)
    click.echo(f"onnx2tf {onnx2tf.VERSION} ready: {python}")
    if into:
        click.echo(f"builds use it when {onnx2tf.ENV_VAR}={python} is set")


@cli.group()
def targets() -> None:
    """List and show hardware target profiles."""


@targets.command("list")
def targets_list() -> None:
    """A table of the built-in target profiles."""
    from rich.console import Console
    from rich.table import Table

    from .targets import builtin_names, load_target

    table = Table()
    for col in ("name", "devices", "formats", "recipes"):
        table.add_column(col)
    for name in builtin_names():
        p = load_target(name)
        not_built = sorted({k.split(":")[0] for k in p.skipped} - {a.format for a in p.buildable})
        table.add_row(
            name,
            ", ".join(p.devices),
            ", ".join(sorted({a.format for a in p.buildable})) + "".join(f"\n(no {f})" for f in not_built),
            ", ".join(dict.fromkeys(a.recipe for a in p.buildable)),
        )
    Console().print(table)


@targets.command("show")
@click.argument("name")
def targets_show(name: str) -> None:
    """The resolved profile NAME (after `extends`), as JSON."""
    import json

    from .targets import load_target

    click.echo(json.dumps(load_target(name).to_dict(), indent=2))


# Devices (issue 5): deploy a bundle to ssh/local devices, inspect a device.
from .cli_devices import deploy as _deploy, device as _device  # noqa: E402

cli.add_command(_deploy)
cli.add_command(_device)

# Parity (issue 4): validate, report, compare.
from .cli_parity import compare_cmd as _compare, report as _report, validate as _validate  # noqa: E402

cli.add_command(_validate)
cli.add_command(_report)
cli.add_command(_compare)

# Compression (issue 17): distill; `build --prune` above.
from .cli_compress import distill as _distill  # noqa: E402

cli.add_command(_distill)


_INTERRUPTED: list = []  # the signal that interrupted this run, once one has


def _on_signal(signum: int, frame: Any) -> None:
    """SIGTERM (a CI job cancelled, `kill`) unwinds like Ctrl-C: temporary folders are removed."""
    _INTERRUPTED.append(signum)
    raise KeyboardInterrupt


def _interrupted_message() -> str:
    from .build import PUBLISHED

    if PUBLISHED:  # the interrupt came after the rename: those bundles are complete
        return "interrupted after publishing the complete bundle(s) " + ", ".join(map(str, PUBLISHED)) + "; nothing half-written was left"
    return "interrupted: no new bundle was written (any earlier bundle at --out is untouched)"


def main(argv: Optional[list] = None) -> None:
    """Entry point: EdgeshipErrors become one line on stderr and their exit code, never a traceback.

    Anything else is a bug: one ``error: internal error in <stage>: ...`` line with the log file
    of its traceback, exit 70 (``--debug`` / ``EDGESHIP_DEBUG=1`` show the traceback here).
    """
    import signal

    from .errors import DISK_FULL_HINT, disk_full
    from .runner.internal_error import debug_requested, pop_debug_flag, report

    args = list(sys.argv[1:] if argv is None else argv)
    debug = pop_debug_flag(args) or debug_requested()
    for sig in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(sig) is not signal.SIG_IGN:  # a signal the caller chose to ignore stays ignored
            signal.signal(sig, _on_signal)
    try:
        cli.main(args=args, prog_name="edgeship", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo(_interrupted_message(), err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo(_interrupted_message(), err=True)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as e:
        if _INTERRUPTED:  # a library turned the interrupt into its own error ("no runtime installed", ...)
            click.echo(_interrupted_message(), err=True)
            sys.exit(EXIT_INTERRUPTED)
        if disk_full(e):
            click.echo(f"error: {DISK_FULL_HINT}", err=True)
            sys.exit(4)
        if isinstance(e, EdgeshipError):
            click.echo(f"error: {e}", err=True)
            sys.exit(e.exit_code)
        sys.exit(report(e, "edgeship", debug))  # a bug: one line and a log file, never a traceback on stderr
    sys.exit(0)


if __name__ == "__main__":
    main()
