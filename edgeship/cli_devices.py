"""`edgeship deploy` and `edgeship device check`: thin Click commands over edgeship.devices."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import click

from .errors import CheckFailed, DeviceError, UsageError

DEVICE_HELP = (
    "ssh://[user@]host[:port][?python=PATH] (host may be a ~/.ssh/config alias), local[:PYTHON], "
    "or qemu-arm64[:cortex-a72|cortex-a76][?numpy=1|2] (an emulated Pi: `edgeship device emulate arm64`)."
)
SSH_CONFIG_HELP = "ssh_config file for ssh/scp (-F). Default: ssh's own (~/.ssh/config). Env: EDGESHIP_SSH_CONFIG."


def signature_options(f: Any) -> Any:
    """--require-signature and --allowed-signers, shared by deploy and validate."""
    f = click.option("--allowed-signers", type=click.Path(dir_okay=False, exists=True), default=None, envvar="EDGESHIP_ALLOWED_SIGNERS",
                     help="ssh-keygen allowed signers file (PRINCIPAL KEYTYPE KEY per line): a signed bundle must be signed by one of them. Env: EDGESHIP_ALLOWED_SIGNERS.")(f)
    return click.option("--require-signature", is_flag=True, envvar="EDGESHIP_REQUIRE_SIGNATURE",
                        help="Refuse a bundle that is not signed by a key in --allowed-signers (exit 1). Env: EDGESHIP_REQUIRE_SIGNATURE=1.")(f)


def _devices(specs: Tuple[str, ...], remote_python: Optional[str], ssh_config: Optional[str]) -> List[Any]:
    from .devices import parse_device

    devs = [parse_device(s, remote_python=remote_python, ssh_config=ssh_config) for s in specs]
    labels = [d.label for d in devs]
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise UsageError(f"--device {', '.join(dupes)} given twice")
    return devs


@click.command()
@click.argument("bundle", type=click.Path(file_okay=False, path_type=Path))
@click.option("--device", "-d", "device_specs", multiple=True, required=True, help=f"Where to run, repeatable (in parallel): {DEVICE_HELP}")
@click.option("--remote-python", default=None, help="Python on ssh devices (default python3); a ?python= in the URL wins.")
@click.option("--ssh-config", default=None, envvar="EDGESHIP_SSH_CONFIG", type=click.Path(dir_okay=False, exists=True), help=SSH_CONFIG_HELP)
@click.option("--artifact", "-a", "artifacts", multiple=True, help="Only this artifact (file name or format:recipe); repeatable. Default: all.")
@click.option("--runs", type=click.IntRange(min=1, max=1_000_000), default=None, help="Timed runs per artifact (default: the profile's).")
@click.option("--seconds", type=click.FloatRange(min=0, min_open=True, max=86_400), default=None, help="Time budget for the timed runs of each artifact.")
@click.option("--threads", type=click.IntRange(min=1, max=1024), default=None, help="Threads (default: the profile's, capped at the device's cores).")
@click.option("--remote-dir", default=None, help="Folder on the device for the copy (default: its temp dir).")
@click.option("--keep", is_flag=True, help="Leave the copied bundle on the device.")
@click.option("--serve", "serve", is_flag=True, help="Then serve the model there (KServe v2 over HTTP; a systemd unit when possible) and check its health; keeps the copy.")
@click.option("--serve-port", type=click.IntRange(1, 65535), default=8000, show_default=True, help="Port for --serve (on the device's 127.0.0.1).")
@click.option("--quiet", "-q", is_flag=True, help="No progress lines.")
@signature_options
def deploy(
    bundle: Path,
    device_specs: Tuple[str, ...],
    remote_python: Optional[str],
    ssh_config: Optional[str],
    artifacts: Tuple[str, ...],
    runs: Optional[int],
    seconds: Optional[float],
    threads: Optional[int],
    remote_dir: Optional[str],
    keep: bool,
    serve: bool,
    serve_port: int,
    quiet: bool,
    require_signature: bool,
    allowed_signers: Optional[str],
) -> None:
    """Copy BUNDLE to devices, run parity and latency there, and add a device section to its reports."""
    import math

    if seconds is not None and not math.isfinite(seconds):  # Click's FloatRange lets NaN through
        raise click.BadParameter(f"{seconds} is not a number of seconds", param_hint="--seconds")
    from .bundle import check_signature, inside, load_manifest
    from .devices.deploy import DeployOptions, deploy as run_deploy, select_artifacts
    from .devices.record import record_devices
    from .runner.bundlefmt import SIGNATURE

    manifest = load_manifest(bundle)
    if require_signature or (allowed_signers and inside(bundle, SIGNATURE, "signature").is_file()):
        who = check_signature(bundle, manifest, allowed_signers)  # before anything is copied or run
        if not quiet:
            click.echo(f"… signature: {who}, every file as signed", err=True)
    select_artifacts(manifest, list(artifacts) or None)  # bad names are a usage error before any copying
    devs = _devices(device_specs, remote_python, ssh_config)
    opts = DeployOptions(artifacts=list(artifacts) or None, runs=runs, seconds=seconds, threads=threads, remote_dir=remote_dir, keep=keep, serve=serve, serve_port=serve_port)
    log = (lambda m: None) if quiet else (lambda m: click.echo(f"… {m}", err=True))
    sections = run_deploy(bundle, devs, opts, log=log)
    try:
        record_devices(bundle, sections)
    except OSError as e:  # e.g. a full disk: record_devices left the bundle as it was
        from .errors import DiskFull, disk_full

        what = f"cannot add the device results to {bundle}: {e.strerror or e}; the bundle is unchanged"
        if disk_full(e):  # a full disk is exit 4 everywhere (README's exit codes)
            raise DiskFull(f"{what} (free some space and deploy again)") from None
        raise UsageError(what) from None
    for s in sections:
        _print_section(s)
        if s.get("serve"):
            sv = s["serve"]
            how = f"systemd unit {sv['service']}" if sv.get("service") else f"pid {sv.get('pid')}; {sv.get('note')}"
            click.echo(f"{s['device']}: serving {sv['artifact']} at {sv['url']}/v2/models/{manifest['model']['name']} on the device ({how})")
    click.echo(f"device sections added to {bundle}/report.md, report.json and junit.xml")
    errors = [s for s in sections if s.get("error")]
    if errors:
        code = max(s.get("exit_code", 4) for s in errors)
        raise DeviceError("; ".join(s["error"] for s in errors), exit_code=code)
    missing = [(s["device"], a) for s in sections for a in s["artifacts"] if a["required"] and not a.get("ran")]
    if missing:
        lines = sorted({a["install"] for _, a in missing if a.get("install")})
        names = ", ".join(f"{a['artifact']} on {dev} ({a['reason']})" for dev, a in missing)
        raise DeviceError(f"cannot run {names}; install there: {'; '.join(lines) or '-'} (or deploy only some with --artifact)")
    failed = [f"{s['device']}: {f}" for s in sections for f in s["failures"]]
    if failed:
        raise CheckFailed(f"{len(failed)} check(s) failed on the device(s): " + "; ".join(failed))


def _print_section(s: Dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console() if sys.stdout.isatty() else Console(width=150)  # logs: do not squeeze to 80
    if s.get("error"):
        console.print(f"[red]✗[/red] {s['device']}: {s['error']}")
        return
    f = s["facts"]
    emulated = " [bold yellow]EMULATED[/bold yellow]" if f.get("emulated") else ""
    table = Table(title=f"{s['device']}: {f['cpu']} ({f['cores']} cores, {f['machine']}){emulated}, Python {f['python']}, NumPy {f['numpy']}")
    for col in ("artifact", "runtime", "p50 ms", "p90 ms", "max abs", "top-1 agree", "vs host", "result"):
        table.add_column(col, justify="left" if col in ("artifact", "runtime", "result") else "right", no_wrap=col == "artifact")
    for a in s["artifacts"]:
        if not a.get("ran"):
            table.add_row(a["artifact"], "not run: " + str(a.get("reason") or "runtime missing")[:70], "–", "–", "–", "–", "–", "[red]FAIL[/red]" if a["required"] else "skipped")
            continue
        o = a["parity"]["outputs"][0]
        lat = a.get("latency") or {}
        measured = bool(lat) and lat.get("measured", True)
        table.add_row(
            a["artifact"],
            a.get("backend") or "",
            f"{lat['p50_ms']:.3f}" if measured else "not measured",
            f"{lat['p90_ms']:.3f}" if measured else "not measured",
            f"{o['max_abs']:.3g}",
            f"{o['top1_agreement']:.2%}" if o.get("top1_agreement") is not None else "–",
            ("identical" if a["vs_host"]["identical"] else f"{a['vs_host']['max_abs']:.3g}") if a.get("vs_host") else "–",
            "[green]pass[/green]" if a["passed"] else "[red]FAIL[/red]",
        )
    console.print(table)
    for a in s["artifacts"]:
        if a.get("ran") and a.get("latency") and not a["latency"].get("measured", True):
            console.print(f"[yellow]•[/yellow] {a['artifact']} latency not measured: {a['latency'].get('reason')}")
    for x in s["failures"]:
        console.print(f"[red]✗[/red] {x}")


@click.group()
def device() -> None:
    """Inspect devices, or prepare an emulated one, before deploying to them."""


@device.command("check")
@click.argument("device_spec", metavar="DEVICE")
@click.option("--bundle", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None, help="Also say whether this bundle's artifacts can run there.")
@click.option("--remote-python", default=None, help="Python on the device (default python3).")
@click.option("--ssh-config", default=None, envvar="EDGESHIP_SSH_CONFIG", type=click.Path(dir_okay=False, exists=True), help=SSH_CONFIG_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the runner's check result as JSON.")
def device_check_cmd(device_spec: str, bundle: Optional[Path], remote_python: Optional[str], ssh_config: Optional[str], as_json: bool) -> None:
    """DEVICE's facts (CPU, cores, memory, OS, Python, NumPy, runtimes) and what to install there."""
    from .devices.deploy import device_check

    (dev,) = _devices((device_spec,), remote_python, ssh_config)
    res = device_check(dev, bundle)
    if as_json:
        click.echo(json.dumps(res, indent=2))
    else:
        f = res["device"]
        rows = [
            ("device", dev.label),
            ("architecture", f["machine"]),
            ("CPU", f["cpu"] + (f" — {f['board']}" if f.get("board") else "")),
            *([("emulated", f"{f['emulated']}: parity runs the Arm kernels, latency is not measured")] if f.get("emulated") else []),
            ("cores", str(f["cores"])),
            ("memory", f"{f['memory_mb']} MiB ({f.get('memory_available_mb')} MiB available)"),
            ("disk free", f"{f.get('disk_free_mb')} MiB"),
            ("OS", f["os"]),
            ("Python", f"{f['python']} ({res.get('python_executable', dev.python)})"),
            ("NumPy", f["numpy"]),
            ("OpenCV", f.get("opencv") or "not installed (only `predict` needs it: python3 -m pip install opencv-python-headless)"),
        ]
        for fmt, st in res["runtimes"].items():
            rows.append((f"{fmt} runtime", f"{st['runtime']} {st['version']}" if st["available"] else "missing"))
        sv = res.get("serve")
        if sv is not None:  # optional: only `serve` (HTTP) needs it
            rows.append(("serve", f"can run (uvicorn {sv['uvicorn']}, Starlette {sv['starlette']})" if sv["available"] else f"not installed (only `serve` needs it: {sv['install']})"))
        width = max(len(k) for k, _ in rows)
        for k, v in rows:
            click.echo(f"{k:<{width}}  {v}")
        for a in res.get("artifacts", []):
            click.echo(f"{'can run' if a['can_run'] else 'cannot run':<{width}}  {a['artifact']}")
        if res.get("install"):
            click.echo("to install there:")
            for line in res["install"]:
                click.echo(f"  {line}")
        else:
            click.echo("nothing to install: the runner can run here")
    refused = [a for a in res.get("artifacts", []) if not a["can_run"] and a["required"] and not a.get("install")]
    if bundle is not None and refused:  # a file refused there (damaged, tampered, crashing): 1, as the runner says
        raise DeviceError(f"{dev.label} refused {refused[0]['artifact']}: {refused[0]['reason']}", exit_code=1)
    if bundle is not None and not all(a["can_run"] or not a["required"] for a in res.get("artifacts", [])):
        raise DeviceError(f"{dev.label} cannot run every required artifact of {bundle}; install: {'; '.join(res['install'])}")
    if bundle is None and not any(st["available"] for st in res["runtimes"].values()):
        raise DeviceError(f"{dev.label} has no runtime for TFLite or ONNX; install: {'; '.join(res['install'])}")


@device.command("emulate")
@click.argument("arch", type=click.Choice(["arm64"]))
@click.option("--cpu", type=click.Choice(["cortex-a72", "cortex-a76"]), default="cortex-a72", show_default=True, help="CPU model qemu emulates: cortex-a72 (Raspberry Pi 4) or cortex-a76 (Pi 5).")
@click.option("--numpy", "numpy_gen", type=click.Choice(["1", "2"]), default="2", show_default=True, help="Software generation: 2 = NumPy 2 + ai-edge-litert + onnxruntime (current Pi OS); 1 = NumPy 1 + tflite-runtime 2.14 (older images).")
@click.option("--force", is_flag=True, help="Rebuild it even if prepared.")
@click.option("--json", "as_json", is_flag=True, help="Print what was prepared as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No progress lines.")
def device_emulate_cmd(arch: str, cpu: str, numpy_gen: str, force: bool, as_json: bool, quiet: bool) -> None:
    """Prepare an emulated Raspberry Pi (Debian's arm64 Python under qemu-user with the profile's runtimes), once.

    \b
    Then deploy to it (latency there is not measured: emulated):
      edgeship deploy BUNDLE --device 'qemu-arm64[:CPU][?numpy=1|2]'
    """
    from .devices.qemu import prepare

    log = (lambda m: None) if quiet else (lambda m: click.echo(f"… {m}", err=True))
    p = prepare(cpu=cpu, numpy=numpy_gen, force=force, log=log)
    if as_json:
        click.echo(json.dumps(p.to_dict(), indent=2))
        return
    v = p.versions
    wheels = {w["name"].lower().replace("_", "-"): w for w in p.wheels}
    runtimes = ", ".join(
        f"{name} {ver}" + (f" ({wheels[name]['platform']})" if name in wheels else "") for name, ver in v.items() if name not in ("python", "machine")
    )
    click.echo(f"{p.spec}: {'already prepared' if p.cached else 'prepared'} in {p.seconds:.1f} s, {p.size_bytes / (1 << 20):.0f} MiB at {p.folder}")
    click.echo(f"  Python {v.get('python')} ({v.get('machine')}, Debian 12 arm64) under {p.qemu} -cpu {p.cpu}")
    click.echo(f"  {runtimes}")
    click.echo(f"  deploy to it: edgeship deploy BUNDLE --device '{p.spec}'   (its latency is not measured: emulated)")
