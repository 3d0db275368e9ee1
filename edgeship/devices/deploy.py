"""Deploy a bundle to devices: copy, run the runner's check/parity/bench there, judge on the host.

The flow, written once for every Device:
  probe      the device's Python and NumPy, free disk, a fresh work folder
  stage      copy only what the runner needs to <work>/.incoming, verify every sha256 *there*,
             then rename to <work>/bundle: nothing half-copied is ever run
  run        check (facts, what can run), parity (outputs of the bundled inputs), bench (latency)
  fetch      the outputs come back; parity is computed here, against the bundle's reference
             outputs, with edgeship.parity.compare and the target's own budgets
Several devices run in parallel; each yields one plain dict (a report section).
"""
from __future__ import annotations

import json
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from ..errors import CheckFailed, DeviceError, EdgeshipError, UsageError
from ..runner.bundlefmt import MANIFEST, PARITY_INPUTS, PARITY_REFERENCE, RUNNER_FILE, SIGNATURE
from ..runner.probe import crashed, signal_name
from ..sources import sha256_file
from .base import Device, tail

MIN_PYTHON = (3, 9)

# Runs on the device's Python before anything is copied: written for any Python 3 so an old one
# can still say its version. argv[1]: base folder ('' = the device's temp dir); argv[2]: '1' to make the work folder.
PROBE = r"""
import json, os, sys, tempfile
r = {"python": "%d.%d.%d" % tuple(sys.version_info[:3]), "executable": sys.executable, "numpy": None, "workdir": None}
try:
    import numpy
    r["numpy"] = numpy.__version__
except Exception as e:
    r["numpy_error"] = "%s: %s" % (type(e).__name__, e)
base = sys.argv[1] or tempfile.gettempdir()
r["base"] = base
try:
    st = os.statvfs(base)
    r["free_mb"] = st.f_bavail * st.f_frsize // 1048576
except Exception as e:
    r["free_mb"] = None
    r["base_error"] = str(e)
if sys.argv[2] == "1" and sys.version_info >= (3, 9) and r["numpy"] and r["free_mb"] is not None:
    r["workdir"] = tempfile.mkdtemp(prefix="edgeship-", dir=base)
print(json.dumps(r))
"""

# Verifies the copy on the device, then renames it into place. argv: incoming, final, {rel: [size, sha256]}.
VERIFY_AND_RENAME = r"""
import hashlib, json, os, sys
src, dst, want = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
bad = []
for rel in sorted(want):
    size, sha = want[rel]
    p = os.path.join(src, rel)
    if not os.path.isfile(p) or os.path.getsize(p) != size:
        bad.append(rel)
        continue
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    if h.hexdigest() != sha:
        bad.append(rel)
if bad:
    print(json.dumps({"bad": bad}))
    sys.exit(3)
os.rename(src, dst)
print(json.dumps({"bundle": dst}))
"""


@dataclass
class DeployOptions:
    artifacts: Optional[List[str]] = None  # file names or format:recipe keys; None = all
    runs: Optional[int] = None  # timed runs (default: the profile's)
    seconds: Optional[float] = None  # time budget for the timed runs
    warmup: Optional[int] = None
    threads: Optional[int] = None  # default: the profile's, capped at the device's cores
    remote_dir: Optional[str] = None  # base folder on the device (default: its temp dir)
    keep: bool = False  # leave the copy on the device
    timeout: float = 900
    serve: bool = False  # then start `serve` there (a systemd unit when possible) and check its health
    serve_port: int = 8000


# --------------------------------------------------------------------------- steps


def _json(r: Any, device: Device, what: str) -> Dict[str, Any]:
    try:
        return json.loads(r.stdout)
    except ValueError:
        raise DeviceError(f"{device.label}: {what} failed (exit {r.returncode}): {tail(r.stderr or r.stdout, 2)}") from None


def probe(device: Device, make_workdir: bool, base: Optional[str] = None) -> Dict[str, Any]:
    """Python, NumPy, free disk and (optionally) a fresh work folder on the device; errors say what to install."""
    r = device.run([device.python, "-c", PROBE, base or "", "1" if make_workdir else "0"], timeout=120)
    if r.returncode == 127 or (r.returncode != 0 and "not found" in (r.stderr or "").lower()):
        raise DeviceError(f"{device.label}: Python not found as '{device.python}': {device.python_install_hint()}")
    info = _json(r, device, f"running {device.python}")
    version = tuple(int(x) for x in info["python"].split(".")[:2])
    if version < MIN_PYTHON:
        raise DeviceError(
            f"{device.label}: {device.python} is Python {info['python']}; the runner needs 3.9 or newer "
            f"(install a newer python3, or name one with ?python=PATH)"
        )
    if not info["numpy"]:
        raise DeviceError(f"{device.label}: NumPy is missing for {info['executable']}: {info['executable']} -m pip install numpy")
    if info.get("free_mb") is None:
        raise DeviceError(f"{device.label}: cannot use {info['base']} there: {info.get('base_error', 'no such folder')}")
    return info


def runner_files(bundle: Path, manifest: Dict[str, Any], arts: List[Dict[str, Any]], with_data: bool = True) -> Dict[str, Path]:
    """rel path -> local file: what the runner needs on the device (not reports or host outputs).
    Every path is resolved inside the bundle first (bundle.inside): a manifest cannot name a file elsewhere."""
    from ..bundle import inside
    from ..runner.bundlefmt import file_problem

    rels = [RUNNER_FILE] + ([a["file"] for a in arts] + [PARITY_INPUTS] if with_data else [])
    files = {MANIFEST: inside(bundle, MANIFEST, "manifest")}
    if inside(bundle, SIGNATURE, "signature").is_file():  # travels along, so the runner can check it there too
        files[SIGNATURE] = inside(bundle, SIGNATURE, "signature")
    problems = []
    for rel in dict.fromkeys(rels):
        p = inside(bundle, rel, "file")
        if file_problem(str(bundle), manifest, rel):
            problems.append(rel)
        files[rel] = p
    if problems:
        raise CheckFailed(
            f"{bundle}: {', '.join(problems)} no longer match the manifest's sha256 (tampered, truncated or missing); "
            "rebuild the bundle; nothing was copied"
        )
    return files


def stage(device: Device, files: Dict[str, Path], info: Dict[str, Any], timeout: float) -> str:
    """Copy ``files`` to the device's work folder, verify them there, rename into place; the bundle path."""
    from ..bundle import inside

    need_mb = int(sum(p.stat().st_size for p in files.values()) * 1.2 / (1 << 20)) + 2  # + outputs, results
    if info["free_mb"] < need_mb:
        raise DeviceError(
            f"{device.label}: out of disk space: {info['base']} has {info['free_mb']} MiB free, the bundle needs about "
            f"{need_mb} MiB (free some space there, or choose another folder with --remote-dir)"
        )
    work = info["workdir"]
    incoming, final = f"{work}/.incoming", f"{work}/bundle"
    with tempfile.TemporaryDirectory(prefix="edgeship-stage-") as tmp:
        local = Path(tmp) / "b"
        local.mkdir()
        for rel, src in files.items():
            dest = inside(local, rel, "file")  # the staging copy never writes outside its folder either
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
        device.upload(local, incoming, timeout=timeout)
    want = {rel: [p.stat().st_size, sha256_file(p)] for rel, p in files.items()}
    # device.python, not the probe's sys.executable: a wrapper the user named (env, emulator) stays in the loop
    r = device.run([device.python, "-c", VERIFY_AND_RENAME, incoming, final, json.dumps(want)], timeout=300)
    out = _json(r, device, "verifying the copy")
    if out.get("bad"):
        raise DeviceError(f"{device.label}: the copy arrived damaged ({', '.join(out['bad'])}); nothing was run. Try again")
    return final


def run_runner(device: Device, info: Dict[str, Any], remote_bundle: str, args: List[str], timeout: float, ok=(0,)) -> Dict[str, Any]:
    r = device.run([device.python, f"{remote_bundle}/{RUNNER_FILE}", *args], timeout=timeout)
    if crashed(r.returncode) and r.returncode not in ok:
        said = tail(r.stderr or r.stdout)
        raise DeviceError(
            f"{device.label}: runner {args[0]} crashed (killed by {signal_name(r.returncode)})"
            + ("" if said == "(no output)" else f": {said}"),
        )
    if r.returncode not in ok:
        what = "runtime missing" if r.returncode == 4 else "failed"
        raise DeviceError(f"{device.label}: runner {args[0]} {what}: {tail(r.stderr or r.stdout)}", exit_code=4 if r.returncode != 1 else 1)
    return _json(r, device, f"runner {args[0]}")


# --------------------------------------------------------------------------- one device


def select_artifacts(manifest: Dict[str, Any], names: Optional[List[str]]) -> List[Dict[str, Any]]:
    arts = manifest["artifacts"]
    if not names:
        return list(arts)
    by = {a["path"]: a for a in arts}
    by.update({a["key"]: a for a in arts})
    missing = [n for n in names if n not in by]
    if missing:
        raise UsageError(f"no artifact {', '.join(missing)} in the bundle (have: {', '.join(a['path'] for a in arts)})")
    return [by[n] for n in dict.fromkeys(names)]


def load_npz(path: Path) -> Dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def judge(bundle: Path, manifest: Dict[str, Any], art: Dict[str, Any], outputs: Dict[str, np.ndarray]) -> Dict[str, Any]:
    """Parity of one artifact's device outputs, on the host, exactly as the build judged the host's."""
    from ..bundle import inside
    from ..parity import compare

    reference = load_npz(inside(bundle, PARITY_REFERENCE, "file"))
    inputs = load_npz(inside(bundle, PARITY_INPUTS, "file"))
    budget = manifest["target"].get("budgets", {}).get(art["recipe"], {})
    try:
        result = compare(art["path"], reference, outputs, budget, labels=inputs.get("__labels__"), inputs_from="the bundle's parity inputs, run on the device")
    except ValueError as e:  # device outputs that do not match the reference, a budget for an unknown output
        raise UsageError(f"{bundle}: {art['path']}: {e}") from None
    vs_host = against_host(inside(bundle, f"parity/host_{art['path']}.npz", "file"), outputs)
    return {
        "parity": result.to_dict(), "passed": result.passed, "failures": result.failures,
        "vs_host": vs_host, "max_abs_vs_host": vs_host["max_abs"] if vs_host else None,
    }  # fmt: skip


def against_host(host_file: Path, outputs: Dict[str, np.ndarray]) -> Optional[Dict[str, Any]]:
    """The device's outputs against the build host's for the same artifact and inputs: shown, never judged.

    Another architecture's kernels (Arm NEON vs x86 AVX, onnxruntime's int8 paths) may round
    differently; the budget against the reference decides, and this says by how much they differ.
    """
    if not host_file.is_file():
        return None
    from ..parity import output_metrics

    host = load_npz(host_file)
    if len(host) != len(outputs):
        return None
    max_abs, top1, differing, total = 0.0, None, 0, 0
    for (name, h), d in zip(host.items(), outputs.values()):
        h64 = np.asarray(h, np.float64)
        d64 = np.asarray(d, np.float64).reshape(h64.shape)
        m = output_metrics(name, h64, d64)
        max_abs = max(max_abs, m.max_abs)
        if m.top1_agreement is not None:
            top1 = m.top1_agreement if top1 is None else min(top1, m.top1_agreement)
        differing += int(np.count_nonzero(h64 != d64))
        total += h64.size
    return {"max_abs": max_abs, "top1_agreement": top1, "identical": differing == 0, "differing_values": differing, "values": total}


def deploy_one(
    device: Device, bundle: Path, opts: DeployOptions, results_dir: Optional[Path] = None, log: Callable[[str], None] = lambda m: None
) -> Dict[str, Any]:
    """The whole flow on one device; the device's report section (raises DeviceError/CheckFailed)."""
    from ..bundle import load_manifest

    manifest = load_manifest(bundle)
    arts = select_artifacts(manifest, opts.artifacts)
    files = runner_files(bundle, manifest, arts)
    info = probe(device, make_workdir=True, base=opts.remote_dir)
    work = info["workdir"]
    try:
        log(f"{device.label}: copying {len(files)} files to {work}")
        rb = stage(device, files, info, opts.timeout)
        check = run_runner(device, info, rb, ["check", rb], 300, ok=(0, 1, 4))
        can = {a["artifact"]: a for a in check.get("artifacts", [])}
        runnable = [a for a in arts if can.get(a["path"], {}).get("can_run")]
        section: Dict[str, Any] = {
            "device": device.label,
            "facts": check["device"],
            "runtimes": check["runtimes"],
            "python_executable": info["executable"],
            "artifacts": [],
        }
        if not runnable:
            why = "; ".join(f"{a['path']}: {can.get(a['path'], {}).get('reason')}" for a in arts)
            lines = sorted({can[a["path"]]["install"] for a in arts if can.get(a["path"], {}).get("install")})
            raise DeviceError(f"{device.label}: nothing can run there ({why}); install: {'; '.join(lines) or '-'}")
        sel = [x for a in runnable for x in ("--artifact", a["path"])]
        thr = ["--threads", str(opts.threads)] if opts.threads else []
        log(f"{device.label}: parity on {len(runnable)} artifact(s)")
        parity = run_runner(device, info, rb, ["parity", rb, "--out", f"{work}/results", *sel, *thr], opts.timeout)
        rt = manifest["target"].get("runtime", {})
        bench_args = ["bench", rb, "--runs", str(opts.runs or rt.get("runs", 100)), "--warmup", str(opts.warmup if opts.warmup is not None else rt.get("warmup", 10))]
        if opts.seconds:
            bench_args += ["--seconds", str(opts.seconds)]
        log(f"{device.label}: timing {len(runnable)} artifact(s)")
        bench = run_runner(device, info, rb, [*bench_args, *sel, *thr], opts.timeout)
        local = Path(tempfile.mkdtemp(prefix="edgeship-results-"))
        try:
            device.download(f"{work}/results", local / "results", timeout=opts.timeout)
            lat = {x["artifact"]: x for x in bench["latency"]}
            backend = {x["artifact"]: x["backend"] for x in parity["parity_outputs"]}
            notes = {x["artifact"]: x.get("note") for x in parity["parity_outputs"]}
            for a in arts:
                entry: Dict[str, Any] = {"artifact": a["path"], "key": a["key"], "required": a.get("required", True)}
                if a not in runnable:
                    st = can.get(a["path"], {})
                    entry.update(ran=False, reason=st.get("reason") or "cannot run there", install=st.get("install"), passed=False)
                else:
                    out_file = local / "results" / f"outputs_{a['path']}.npz"
                    entry.update(ran=True, backend=backend.get(a["path"]), latency=lat.get(a["path"]), note=notes.get(a["path"]))
                    entry.update(judge(bundle, manifest, a, load_npz(out_file)))
                    if results_dir is not None:
                        results_dir.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(out_file, results_dir / out_file.name)
                section["artifacts"].append(entry)
        finally:
            shutil.rmtree(local, ignore_errors=True)
        section["threads"] = bench["latency"][0].get("threads") if bench["latency"] else None
        section["failures"] = device_failures(section, manifest)
        section["passed"] = not section["failures"]
        section["error"] = None
        if opts.serve:
            if not check.get("serve", {}).get("available"):
                raise DeviceError(f"{device.label}: serve needs uvicorn and Starlette there: {device.python} -m pip install uvicorn starlette", exit_code=4)
            log(f"{device.label}: starting serve on port {opts.serve_port}")
            section["serve"] = start_serve(device, rb, manifest, opts.serve_port)
        return section
    finally:
        if not opts.keep and not opts.serve:  # a served bundle stays where the server reads it
            device.remove(work)


# Polls the server `serve` started on the device, from the device (it listens on the device's loopback).
# argv: base url, model name, the bundle folder it must be serving, seconds to wait.
SERVE_HEALTH = r"""
import json, sys, time, urllib.request
url, name, want, secs = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
end, last = time.time() + secs, "no answer"
while time.time() < end:
    try:
        with urllib.request.urlopen(url + "/v2/health/ready", timeout=2) as r:
            ready = r.status == 200
        with urllib.request.urlopen(url + "/v2/models/" + name, timeout=2) as r:
            meta = json.load(r)
        got = meta.get("edgeship", {}).get("bundle")
        if ready and got == want:
            print(json.dumps({"ready": True, "metadata": meta}))
            sys.exit(0)
        last = "another server answers on this port (serving %s)" % got
    except Exception as e:
        last = "%s: %s" % (type(e).__name__, e)
    time.sleep(0.3)
print(json.dumps({"ready": False, "error": last}))
"""


def start_serve(device: Device, rb: str, manifest: Dict[str, Any], port: int) -> Dict[str, Any]:
    """Start `serve` on the device and wait until it answers ready for this bundle.

    A systemd unit when systemd runs there and the unit can be installed (it survives a reboot), else a
    background process (it does not; the section says so and how to install the unit)."""
    import shlex

    pyz = f"{rb}/{RUNNER_FILE}"
    base = [device.python, pyz, "serve", rb, "--port", str(port)]
    out: Dict[str, Any] = {"url": f"http://127.0.0.1:{port}", "port": port, "service": None, "pid": None, "note": None}
    has_systemd = device.run(["test", "-d", "/run/systemd/system"], timeout=60).returncode == 0
    r = device.run([*base, "--install-service", "--yes"], timeout=120) if has_systemd else None
    if r is not None and r.returncode == 0:
        out["service"] = next((ln.split()[1] for ln in r.stderr.splitlines() if ln.startswith("started ")), None)
    else:
        why = tail(r.stderr) if r is not None else "systemd is not running there"
        log_file = f"{rb}/serve.log"
        cmd = " ".join(shlex.quote(x) for x in base) + f" > {shlex.quote(log_file)} 2>&1 < /dev/null & echo $!"
        started = device.run(["sh", "-c", cmd], timeout=60)
        out["pid"] = int(started.stdout.strip().splitlines()[-1]) if started.stdout.strip().isdigit() else None
        out["note"] = (
            f"a background process ({why}): it stops at reboot; for a service run there: "
            f"sudo {device.python} {pyz} serve {rb} --port {port} --install-service --yes"
        )
    name = str(manifest.get("model", {}).get("name") or "model")
    h = device.run([device.python, "-c", SERVE_HEALTH, out["url"], name, rb, "60"], timeout=120)
    res = _json(h, device, "checking serve's health")
    if not res.get("ready"):
        log = device.run(["tail", "-n", "3", f"{rb}/serve.log"], timeout=60).stdout if out["pid"] else ""
        raise DeviceError(f"{device.label}: serve did not become ready on port {port}: {res.get('error')} {tail(log)}".strip(), exit_code=4)
    out.update(ready=True, artifact=res["metadata"]["edgeship"]["artifact"], chosen=res["metadata"]["edgeship"]["chosen"])
    return out


def device_failures(section: Dict[str, Any], manifest: Dict[str, Any]) -> List[str]:
    """What a required artifact missed on this device: parity budgets, the latency budget, or not running."""
    budget_ms = manifest["target"].get("latency_budget_ms")
    out: List[str] = []
    for a in section["artifacts"]:
        if not a["required"]:
            continue
        if not a["ran"]:
            out.append(f"{a['artifact']}: not run on the device ({a['reason']}; {a['install']})")
            continue
        out += [f"{a['artifact']}: {m}" for m in a["failures"]]
        lat = a.get("latency")
        if budget_ms is not None and lat and lat.get("measured", True) and lat["p50_ms"] > budget_ms:
            out.append(f"{a['artifact']}: device latency p50 {lat['p50_ms']:.3f} ms over the budget of {budget_ms} ms")
    return out


# --------------------------------------------------------------------------- several devices


def deploy(
    bundle: Path, devices: List[Device], opts: DeployOptions, log: Callable[[str], None] = lambda m: None
) -> List[Dict[str, Any]]:
    """Run the flow on every device in parallel; one section per device (failed ones carry 'error')."""
    from .record import slug

    def one(dev: Device) -> Dict[str, Any]:
        outputs = Path(tempfile.mkdtemp(prefix="edgeship-dev-")) / slug(dev.label)
        try:
            section = deploy_one(dev, bundle, opts, results_dir=outputs, log=log)
            section["_outputs"] = str(outputs)  # moved into the bundle by record.record_devices, which removes it
            return section
        except EdgeshipError as e:
            shutil.rmtree(outputs.parent, ignore_errors=True)
            return {"device": dev.label, "error": str(e), "exit_code": e.exit_code, "artifacts": [], "passed": False, "failures": [str(e)]}
        except BaseException:  # a full disk, an interrupt: nothing of this device stays behind
            shutil.rmtree(outputs.parent, ignore_errors=True)
            raise
        finally:
            dev.close()

    with ThreadPoolExecutor(max_workers=max(1, len(devices))) as pool:
        futures = [pool.submit(one, d) for d in devices]
    sections: List[Dict[str, Any]] = []
    error: Optional[BaseException] = None
    for f in futures:
        try:
            sections.append(f.result())
        except BaseException as e:
            error = error or e
    if error is not None:  # the other devices' outputs will never be recorded: remove them too
        discard_outputs(sections)
        raise error
    return sections


def discard_outputs(sections: List[Dict[str, Any]]) -> None:
    """Remove the temporary device outputs of sections that will not be recorded (edgeship-dev-* folders)."""
    for s in sections:
        if s.get("_outputs"):
            shutil.rmtree(Path(s["_outputs"]).parent, ignore_errors=True)


def device_check(device: Device, bundle: Optional[Path] = None, remote_dir: Optional[str] = None) -> Dict[str, Any]:
    """The device's facts and what to install there (against a bundle's artifacts when given)."""
    from ..bundle import load_manifest

    tmp: Optional[Path] = None
    info: Dict[str, Any] = {}
    try:
        info = probe(device, make_workdir=True, base=remote_dir)
        if bundle is not None:
            manifest = load_manifest(bundle)
            files = runner_files(bundle, manifest, manifest["artifacts"], with_data=False)
        else:
            from ..bundle import write_runner

            tmp = Path(tempfile.mkdtemp(prefix="edgeship-runner-"))
            files = {RUNNER_FILE: write_runner(tmp / RUNNER_FILE)}
        rb = stage(device, files, info, 300)
        return run_runner(device, info, rb, ["check"] + ([rb] if bundle is not None else []), 300, ok=(0, 1, 4))
    finally:
        if info:
            device.remove(info["workdir"])
        device.close()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
