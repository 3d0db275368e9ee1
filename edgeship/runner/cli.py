"""The on-device runner's command line: check, parity, bench, predict, serve.

Runs from the bundle as ``python3 edgeship-runner.pyz COMMAND [BUNDLE]``; needs Python 3.9+,
NumPy and one runtime. Exit codes: 0 ok, 1 a check failed, 2 bad input, 4 runtime missing, 70 internal error.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
from typing import Any, Dict, List, Optional

from . import bundlefmt
from .bundlefmt import MANIFEST, PARITY_INPUTS, BundleError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_RUNTIME = 0, 1, 2, 4


class RunnerError(Exception):
    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def default_bundle() -> str:
    """The folder holding this runner when run as a zipapp from a bundle, else the current one."""
    here = os.path.dirname(os.path.abspath(sys.argv[0] or "."))
    return here if os.path.isfile(os.path.join(here, MANIFEST)) else "."


def load_manifest(bundle: str) -> Dict[str, Any]:
    """The checked manifest (bundlefmt: the host reads it the same way); a malformed one is exit 2."""
    try:
        return bundlefmt.load_manifest(bundle)
    except BundleError as e:
        raise RunnerError(str(e), e.code) from None


def verify_file(bundle: str, manifest: Dict[str, Any], rel: str) -> str:
    """Path of a bundle file whose bytes match the manifest; refuses a tampered or truncated file by
    name (exit 1), and a path that leaves the bundle (exit 2)."""
    try:
        return bundlefmt.verified(bundle, manifest, rel)
    except BundleError as e:
        raise RunnerError(str(e), e.code) from None


def verify_artifact(bundle: str, manifest: Dict[str, Any], art: Dict[str, Any]) -> str:
    return verify_file(bundle, manifest, art["file"])


def check_signature(args: argparse.Namespace, manifest: Dict[str, Any]) -> None:
    """--require-signature: refuse an unsigned bundle; --allowed-signers alone: check a signature when there is one."""
    signers = args.allowed_signers or os.environ.get("EDGESHIP_ALLOWED_SIGNERS")
    required = args.require_signature or os.environ.get("EDGESHIP_REQUIRE_SIGNATURE", "") in ("1", "true", "yes")
    if required and not signers:
        raise RunnerError("--require-signature needs --allowed-signers FILE (ssh-keygen's allowed signers: PRINCIPAL KEYTYPE KEY per line)")
    if not signers or (not required and not os.path.isfile(os.path.join(args.bundle, bundlefmt.SIGNATURE))):
        return
    try:
        bundlefmt.verify_signature(args.bundle, manifest, signers)
    except BundleError as e:
        raise RunnerError(str(e), e.code) from None


def select(manifest: Dict[str, Any], names: Optional[List[str]]) -> List[Dict[str, Any]]:
    arts = manifest["artifacts"]
    if not names:
        return arts
    by = {a["path"]: a for a in arts}
    by.update({a["key"]: a for a in arts})
    missing = [n for n in names if n not in by]
    if missing:
        raise RunnerError(f"no artifact {', '.join(missing)} in the bundle (have {', '.join(a['path'] for a in arts)})")
    return [by[n] for n in names]


def runtime_status(fmt: str) -> Dict[str, Any]:
    from .runners import RuntimeMissing, tflite_backend

    try:
        if fmt == "tflite":
            _, label, version = tflite_backend()
            return {"available": True, "runtime": label, "version": version}
        import onnxruntime

        return {"available": True, "runtime": "onnxruntime", "version": onnxruntime.__version__}
    except RuntimeMissing as e:
        return {"available": False, "install": e.install, "error": str(e)}
    except Exception as e:
        from .runners import ORT_INSTALL

        return {"available": False, "install": ORT_INSTALL, "error": f"{type(e).__name__}: {e}"}


# Arm "CPU part" numbers of common boards (Raspberry Pi 3/4/5, Cortex-A SoCs) -> core name.
ARM_PARTS = {
    "0xc07": "Cortex-A7", "0xc08": "Cortex-A8", "0xc09": "Cortex-A9", "0xc0f": "Cortex-A15",
    "0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55", "0xd07": "Cortex-A57",
    "0xd08": "Cortex-A72", "0xd09": "Cortex-A73", "0xd0a": "Cortex-A75", "0xd0b": "Cortex-A76",
    "0xd0d": "Cortex-A77", "0xd41": "Cortex-A78", "0xd46": "Cortex-A510", "0xd47": "Cortex-A710",
}


def emulation(machine: str, cpuinfo: Dict[str, str]) -> Optional[str]:
    """Why this Python runs emulated (qemu-user), or None: its code is Arm but /proc/cpuinfo describes
    an x86 CPU (or the reverse), because the kernel underneath is the host's."""
    m = machine.lower()
    x86_cpu = "vendor_id" in cpuinfo or "flags" in cpuinfo
    arm_cpu = "cpu part" in cpuinfo or "cpu implementer" in cpuinfo
    if (m.startswith(("aarch64", "arm")) and x86_cpu) or (m in ("x86_64", "amd64", "i686") and arm_cpu):
        host = cpuinfo.get("model name") or cpuinfo.get("cpu part") or "another CPU"
        return f"{machine} code emulated on {host} (qemu-user or similar)"
    return None


def _read(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace").strip("\x00 \n")
    except OSError:
        return ""


def device_facts(where: str = ".") -> Dict[str, Any]:
    """What this device is: architecture, CPU, cores, memory, OS, Python, NumPy, free disk."""
    import numpy as np

    facts: Dict[str, Any] = {
        "machine": platform.machine(),
        "system": platform.system(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cores": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "board": _read("/sys/firmware/devicetree/base/model") or None,
        "memory_mb": None,
        "memory_available_mb": None,
        "disk_free_mb": None,
        "opencv": None,
    }
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            facts["os"] = f"{line.split('=', 1)[1].strip(chr(34))} ({platform.platform()})"
    info: Dict[str, str] = {}
    for line in _read("/proc/cpuinfo").splitlines():
        key, _, value = line.partition(":")
        info.setdefault(key.strip().lower(), value.strip())
    facts["emulated"] = emulation(facts["machine"], info)
    if info.get("model name"):  # x86, and some Arm kernels
        facts["cpu"] = info["model name"]
    elif info.get("cpu part"):  # Arm: name the core from its part number
        facts["cpu"] = ARM_PARTS.get(info["cpu part"].lower(), f"Arm CPU part {info['cpu part']}")
    for line in _read("/proc/meminfo").splitlines():
        key, _, value = line.partition(":")
        if key in ("MemTotal", "MemAvailable") and value.split():
            facts["memory_mb" if key == "MemTotal" else "memory_available_mb"] = int(value.split()[0]) // 1024
    try:
        facts["disk_free_mb"] = shutil.disk_usage(where).free // (1 << 20)
    except OSError:
        pass
    from .images import opencv_version

    facts["opencv"] = opencv_version()
    return facts


UPGRADE = {"tflite": "python3 -m pip install -U ai-edge-litert", "onnx": "python3 -m pip install -U onnxruntime"}


def artifact_runnable(bundle: Optional[str], manifest: Dict[str, Any], status: Dict[str, Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Per artifact: can it run here? Runtime importable, and (when the file is here) the file
    verified and actually opened, so an op the installed runtime is too old for shows up now."""
    from .runners import open_runner

    out = []
    for a in manifest["artifacts"]:
        st = status[a["format"]]
        e: Dict[str, Any] = {"artifact": a["path"], "format": a["format"], "required": a.get("required", True), "can_run": False, "opened": False, "install": None, "reason": None}
        out.append(e)
        if not st["available"]:
            e.update(install=st.get("install"), reason=f"no {a['format']} runtime installed")
            continue
        if not bundle or not os.path.isfile(bundlefmt.contained(bundle, a["file"], "artifact file")):
            e["can_run"] = True  # the runtime is here; the file was not copied (e.g. device check)
            continue
        try:
            path = verify_artifact(bundle, manifest, a)
            open_runner(path, a["format"], threads=1, **runner_options(manifest, a["format"]))
            e.update(can_run=True, opened=True)
        except RunnerError as err:
            e.update(reason=str(err), refused=True)
        except Exception as err:  # the runtime is there but cannot load this model (e.g. too old for an op)
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            e.update(reason=f"{st['runtime']} {st['version']} cannot open it: {first}", install=UPGRADE[a["format"]])
    return out


def cmd_check(args: argparse.Namespace) -> int:
    manifest = load_manifest(args.bundle) if args.bundle else None
    if manifest:
        check_signature(args, manifest)
    status = {fmt: runtime_status(fmt) for fmt in ("tflite", "onnx")}
    report: Dict[str, Any] = {"device": device_facts(args.bundle or "."), "runtimes": status, "artifacts": []}
    from .serve import serve_status

    report["serve"] = serve_status()  # optional: only `serve` needs it, so it never fails the check
    if manifest:
        report["artifacts"] = artifact_runnable(args.bundle, manifest, status)
        missing = [a for a in report["artifacts"] if not a["can_run"] and a["install"]]
        report["install"] = sorted({a["install"] for a in missing})
        ok = all(a["can_run"] or not a["required"] for a in report["artifacts"])
        if any(a.get("refused") and a["required"] for a in report["artifacts"]):
            _emit(report, args.json)
            return EXIT_FAILED  # a file refused (not as the manifest says) is a failed check, not a missing runtime
    else:
        report["install"] = sorted({st["install"] for st in status.values() if not st["available"]})
        ok = any(st["available"] for st in status.values())
    _emit(report, args.json)
    return EXIT_OK if ok else EXIT_RUNTIME


DEVICE_HINT = "a CPU time would not be this accelerator's: install its runtime or delegate library here"


def accelerator_missing(manifest: Dict[str, Any], fmt: str, hint: str = DEVICE_HINT) -> Optional[str]:
    """Why the profile's accelerator for ``fmt`` is absent on this device (None: present, or none named)."""
    from .accel import accelerator_missing as missing

    rt = manifest.get("target", {}).get("runtime", {})
    return missing(fmt, rt.get("onnx_providers") or [], rt.get("tflite_delegates") or [], "this device", hint)


def runner_options(manifest: Dict[str, Any], fmt: str) -> Dict[str, Any]:
    """The target profile's runtime options for ``fmt`` (as the host's build.runner_options); the
    profile's TFLite delegates only where they are present, else the CPU (callers say so)."""
    rt = manifest.get("target", {}).get("runtime", {})
    if fmt == "tflite":
        opts: Dict[str, Any] = {"use_xnnpack": bool(rt.get("xnnpack", True))}
        if rt.get("tflite_delegates") and accelerator_missing(manifest, fmt) is None:
            opts["delegates"] = list(rt["tflite_delegates"])
        return opts
    return {"providers": rt.get("onnx_providers") or None}


def load_inputs(bundle: str, manifest: Dict[str, Any]) -> Dict[str, Any]:
    import numpy as np

    path = verify_file(bundle, manifest, PARITY_INPUTS)
    with np.load(path) as z:
        return {k: z[k] for k in z.files if k != "__labels__"}


def default_threads(manifest: Dict[str, Any]) -> Optional[int]:
    """The profile's threads capped at this device's cores, as the host does (more only oversubscribes)."""
    wanted = manifest.get("target", {}).get("runtime", {}).get("threads")
    cores = os.cpu_count() or 1
    return max(1, min(int(wanted), cores)) if wanted else None


def cmd_parity(args: argparse.Namespace) -> int:
    import numpy as np

    from .runners import open_runner

    manifest = load_manifest(args.bundle)
    check_signature(args, manifest)
    arts = select(manifest, args.artifact)
    paths = [verify_artifact(args.bundle, manifest, a) for a in arts]  # refuse before running anything
    feed = load_inputs(args.bundle, manifest)
    out_dir = args.out or os.path.join(args.bundle, "device")
    os.makedirs(out_dir, exist_ok=True)
    threads = args.threads or default_threads(manifest)
    written = []
    for a, path in zip(arts, paths):
        runner = open_runner(path, a["format"], threads=threads, **runner_options(manifest, a["format"]))
        outs = runner.run(feed)
        cpu_why = accelerator_missing(manifest, a["format"], hint="")
        dest = os.path.join(out_dir, f"outputs_{bundlefmt.plain_name(a['path'], 'artifact path')}.npz")
        np.savez_compressed(dest, **outs)
        written.append(
            {
                "artifact": a["path"], "key": a.get("key"), "outputs": dest, "samples": int(next(iter(outs.values())).shape[0]),
                "backend": f"{runner.backend} {runner.backend_version}",
                "note": (f"ran on the CPU: {cpu_why}" if cpu_why else None),
            }
        )
    _emit({"parity_outputs": written, "threads": threads}, args.json)
    return EXIT_OK


def cmd_bench(args: argparse.Namespace) -> int:
    from .latency import LatencyResult, measure

    manifest = load_manifest(args.bundle)
    check_signature(args, manifest)
    arts = select(manifest, args.artifact)
    paths = [verify_artifact(args.bundle, manifest, a) for a in arts]
    threads = args.threads or default_threads(manifest)
    feed = {k: v[:1] for k, v in load_inputs(args.bundle, manifest).items()}
    facts = device_facts(args.bundle)
    results = []
    for a, path in zip(arts, paths):
        why = accelerator_missing(manifest, a["format"])
        if why:  # never time the CPU and let it pass for the accelerator's latency
            d = LatencyResult.not_measured(os.path.basename(path), why).to_dict()
            d["key"] = a.get("key")
            results.append(d)
            continue
        res = measure(
            path, feed, fmt=a["format"], threads=threads, warmup=args.warmup, runs=args.runs, budget_s=args.seconds,
            keep_samples=not args.no_samples, **runner_options(manifest, a["format"])
        )
        d = res.to_dict()
        d["key"] = a.get("key")
        if facts["emulated"]:  # the timings are the emulator's: kept in the JSON, never shown as the device's
            d.update(measured=False, reason=f"{facts['emulated']}: timings are the emulator's, not a device's")
        results.append(d)
    _emit({"device": facts, "latency": results}, args.json)
    return EXIT_OK


def _predict_artifact(manifest: Dict[str, Any], names: Optional[List[str]]) -> Dict[str, Any]:
    """The chosen artifact, else the first one whose runtime is installed here."""
    if names:
        return select(manifest, names[:1])[0]
    for a in manifest["artifacts"]:
        if runtime_status(a["format"])["available"]:
            return a
    from .runners import TFLITE_INSTALL

    raise RunnerError(f"no runtime installed for any artifact in this bundle: {TFLITE_INSTALL}", EXIT_RUNTIME)


def cmd_predict(args: argparse.Namespace) -> int:
    from .images import OpenCVMissing, opencv, preprocess, read_image, top_classes
    from .runners import open_runner

    if not args.images and args.camera is None:
        raise RunnerError("give one or more IMAGE files, or --camera N")
    manifest = load_manifest(args.bundle)
    check_signature(args, manifest)
    spec = manifest.get("preprocessing")
    if not spec:
        raise RunnerError("this bundle records no preprocessing, so predict cannot turn an image into an input; rebuild it with a model that declares one")
    try:
        opencv("predict")
    except OpenCVMissing as e:
        raise RunnerError(str(e), EXIT_RUNTIME) from None
    art = _predict_artifact(manifest, args.artifact)
    path = verify_artifact(args.bundle, manifest, art)
    runner = open_runner(path, art["format"], threads=args.threads or default_threads(manifest), **runner_options(manifest, art["format"]))
    shape = (art.get("inputs") or [{}])[0].get("shape") or runner.inputs[0].shape
    names = manifest.get("class_names")
    input_name = runner.inputs[0].name
    results = []

    def classify(label: str, img: Any) -> None:
        out = runner.run({input_name: preprocess(img, spec, shape)})
        top = top_classes(next(iter(out.values()))[0], names, args.top)
        results.append({"image": label, "top": [{"label": n, "score": round(p, 6)} for n, p in top]})
        if not args.json:
            print(f"{label}: " + ", ".join(f"{n} ({p:.2%})" for n, p in top), flush=True)

    for image in args.images:
        try:
            img = read_image(image, spec)
        except ValueError as e:
            raise RunnerError(str(e)) from None
        classify(image, img)
    if args.camera is not None:
        cv2 = opencv("--camera")
        cap = cv2.VideoCapture(args.camera)
        if not cap.isOpened():
            raise RunnerError(f"camera {args.camera} could not be opened (is it connected, and is this user in the 'video' group?)", EXIT_RUNTIME)
        n = 0
        try:
            while args.frames is None or n < args.frames:
                ok, frame = cap.read()
                if not ok:
                    raise RunnerError(f"camera {args.camera} stopped delivering frames", EXIT_RUNTIME)
                n += 1
                classify(f"camera {args.camera} frame {n}", frame)
        except KeyboardInterrupt:
            pass
        finally:
            cap.release()
    if args.json:
        _emit({"artifact": art["path"], "backend": f"{runner.backend} {runner.backend_version}", "predictions": results}, args.json)
    return EXIT_OK


def _emit(obj: Dict[str, Any], as_json: Any) -> None:
    text = json.dumps(obj, indent=2, default=str)
    if as_json and as_json != "-":
        with open(as_json, "w") as f:
            f.write(text + "\n")
    print(text)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edgeship-runner",
        description="Run an edgeship bundle's models on this device (Python 3.9+, NumPy and one runtime).",
        epilog="exit codes: 0 ok, 1 a check failed or a file was refused, 2 bad input, 4 runtime missing, "
        "70 internal error (the line names the log file with the traceback; --debug or EDGESHIP_DEBUG=1 show it here)",
    )
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("bundle", nargs="?", default=None, help="bundle folder (default: the runner's own folder)")
        sp.add_argument("--json", metavar="FILE", default=None, help="also write the result as JSON to FILE")

    def signing(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--require-signature", action="store_true", help="refuse a bundle without a valid signature (env EDGESHIP_REQUIRE_SIGNATURE=1)")
        sp.add_argument("--allowed-signers", metavar="FILE", default=None, help="ssh-keygen allowed signers file: whose signatures count (env EDGESHIP_ALLOWED_SIGNERS)")

    c = sub.add_parser("check", help="device facts and whether each artifact can run here (with the install line)")
    common(c)
    signing(c)
    c.set_defaults(func=cmd_check)
    for name, func, helptext in (
        ("parity", cmd_parity, "verify artifacts' sha256 and run the bundled parity inputs; writes the outputs"),
        ("bench", cmd_bench, "latency protocol: load, first run, warm-up, timed runs; JSON"),
        ("predict", cmd_predict, "classify image files or camera frames with the bundle's preprocessing"),
    ):
        sp = sub.add_parser(name, help=helptext)
        if name == "predict":
            sp.add_argument("images", nargs="*", metavar="IMAGE", help="image files (png, jpg, ...)")
            sp.add_argument("--bundle", dest="bundle", default=None, help="bundle folder (default: the runner's own folder)")
            sp.add_argument("--json", metavar="FILE", default=None, help="print JSON instead of lines ('-' for stdout only)")
        else:
            common(sp)
        signing(sp)
        sp.add_argument("--artifact", action="append", help="only this artifact (file name or format:recipe); repeatable")
        sp.add_argument("--threads", type=int, default=None, help="threads (default: the target profile's)")
        sp.set_defaults(func=func)
    bench = sub.choices["bench"]
    bench.add_argument("--runs", type=int, default=100, help="timed runs (default 100)")
    bench.add_argument("--warmup", type=int, default=10, help="untimed warm-up runs (default 10)")
    bench.add_argument("--seconds", type=float, default=None, help="time budget: stop the timed runs after this many seconds")
    bench.add_argument("--no-samples", action="store_true", help="leave the per-run samples out of the JSON")
    sub.choices["parity"].add_argument("--out", default=None, help="folder for the outputs (default BUNDLE/device)")
    pred = sub.choices["predict"]
    pred.add_argument("--camera", type=int, default=None, metavar="N", help="read frames from camera N (OpenCV VideoCapture)")
    pred.add_argument("--frames", type=int, default=None, help="stop after this many camera frames (default: until Ctrl-C)")
    pred.add_argument("--top", type=int, default=3, help="how many classes to print (default 3)")
    from .serve import add_parser

    add_parser(sub)
    signing(sub.choices["serve"])
    return p


def main(argv: Optional[List[str]] = None) -> int:
    if sys.version_info < (3, 9):
        print(f"error: the runner needs Python 3.9 or newer; this is {platform.python_version()}", file=sys.stderr)
        return EXIT_RUNTIME
    from .internal_error import debug_requested, pop_debug_flag, report, set_stage

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = pop_debug_flag(argv) or debug_requested()
    args = parser().parse_args(argv)
    set_stage(args.command)
    if args.bundle is None and (args.command != "check" or os.path.isfile(os.path.join(default_bundle(), "manifest.json"))):
        args.bundle = default_bundle()
    try:
        import numpy  # noqa: F401
    except ImportError:
        print("error: NumPy is not installed for this Python: python3 -m pip install numpy", file=sys.stderr)
        return EXIT_RUNTIME
    try:
        return args.func(args)
    except (RunnerError, BundleError) as e:
        print(f"error: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # one line, never a traceback
        from .runners import RuntimeMissing

        if isinstance(e, RuntimeMissing):
            print(f"error: {e}", file=sys.stderr)
            return EXIT_RUNTIME
        return report(e, "edgeship-runner", debug)  # a bug: the line names the log file with the traceback


if __name__ == "__main__":
    sys.exit(main())
