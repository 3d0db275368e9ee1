"""The on-device runner's command line: check, parity, bench.

Runs from the bundle as ``python3 edgeship-runner.pyz COMMAND [BUNDLE]``; needs Python 3.9+,
NumPy and one runtime. Exit codes: 0 ok, 1 a check failed, 2 bad input, 4 runtime missing.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
from typing import Any, Dict, List, Optional

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_RUNTIME = 0, 1, 2, 4


class RunnerError(Exception):
    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def default_bundle() -> str:
    """The folder holding this runner when run as a zipapp from a bundle, else the current one."""
    here = os.path.dirname(os.path.abspath(sys.argv[0] or "."))
    return here if os.path.isfile(os.path.join(here, "manifest.json")) else "."


def load_manifest(bundle: str) -> Dict[str, Any]:
    path = os.path.join(bundle, "manifest.json")
    if not os.path.isfile(path):
        raise RunnerError(f"{bundle}: no manifest.json here; pass the bundle folder")
    with open(path) as f:
        return json.load(f)


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_artifact(bundle: str, manifest: Dict[str, Any], art: Dict[str, Any]) -> str:
    """Path of an artifact whose bytes match the manifest; refuses a tampered or truncated file."""
    rel = art["file"]
    path = os.path.join(bundle, rel)
    meta = manifest["files"].get(rel)
    if meta is None:
        raise RunnerError(f"{rel} is not listed in the manifest's files")
    if not os.path.isfile(path):
        raise RunnerError(f"{rel} is missing from the bundle", EXIT_FAILED)
    if os.path.getsize(path) != meta["size"] or sha256(path) != meta["sha256"]:
        raise RunnerError(f"refusing {rel}: sha256 does not match the manifest (tampered or truncated)", EXIT_FAILED)
    return path


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


def device_facts() -> Dict[str, Any]:
    import numpy as np

    facts: Dict[str, Any] = {
        "machine": platform.machine(),
        "system": platform.system(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cores": os.cpu_count(),
        "cpu": platform.processor(),
        "memory_mb": None,
    }
    try:
        info: Dict[str, str] = {}
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                info.setdefault(key.strip().lower(), value.strip())
        # x86: "model name"; Arm: "Model" (Raspberry Pi) or "Hardware", else the CPU part number.
        for key in ("model name", "model", "hardware", "cpu part"):
            if info.get(key) and not info[key].isdigit():
                facts["cpu"] = info[key]
                break
        with open("/proc/meminfo") as f:
            facts["memory_mb"] = int(f.readline().split()[1]) // 1024
    except OSError:
        pass
    return facts


def cmd_check(args: argparse.Namespace) -> int:
    facts = device_facts()
    report: Dict[str, Any] = {"device": facts, "artifacts": []}
    ok = True
    manifest = load_manifest(args.bundle) if args.bundle else None
    formats = sorted({a["format"] for a in manifest["artifacts"]}) if manifest else ["tflite", "onnx"]
    status = {fmt: runtime_status(fmt) for fmt in formats}
    report["runtimes"] = status
    if manifest:
        for a in manifest["artifacts"]:
            st = status[a["format"]]
            report["artifacts"].append({"artifact": a["path"], "can_run": st["available"], "install": st.get("install")})
            ok = ok and (st["available"] or not a["required"])
    _emit(report, args.json)
    return EXIT_OK if ok else EXIT_RUNTIME


def cmd_parity(args: argparse.Namespace) -> int:
    import numpy as np

    from .runners import open_runner

    manifest = load_manifest(args.bundle)
    with np.load(os.path.join(args.bundle, "parity", "inputs.npz")) as z:
        feed = {k: z[k] for k in z.files if k != "__labels__"}
    out_dir = args.out or os.path.join(args.bundle, "device")
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for a in select(manifest, args.artifact):
        path = verify_artifact(args.bundle, manifest, a)
        runner = open_runner(path, a["format"], threads=args.threads)
        outs = runner.run(feed)
        dest = os.path.join(out_dir, f"outputs_{a['path']}.npz")
        np.savez_compressed(dest, **outs)
        written.append({"artifact": a["path"], "outputs": dest, "backend": f"{runner.backend} {runner.backend_version}"})
    _emit({"parity_outputs": written}, args.json)
    return EXIT_OK


def cmd_bench(args: argparse.Namespace) -> int:
    import numpy as np

    from .latency import measure

    manifest = load_manifest(args.bundle)
    threads = args.threads or manifest["target"]["runtime"].get("threads")
    with np.load(os.path.join(args.bundle, "parity", "inputs.npz")) as z:
        feed = {k: z[k][:1] for k in z.files if k != "__labels__"}
    results = []
    for a in select(manifest, args.artifact):
        path = verify_artifact(args.bundle, manifest, a)
        res = measure(path, feed, fmt=a["format"], threads=threads, warmup=args.warmup, runs=args.runs, budget_s=args.seconds)
        results.append(res.to_dict())
    _emit({"device": device_facts(), "latency": results}, args.json)
    return EXIT_OK


def _emit(obj: Dict[str, Any], as_json: bool) -> None:
    text = json.dumps(obj, indent=2, default=str)
    if as_json and as_json != "-":
        with open(as_json, "w") as f:
            f.write(text + "\n")
    print(text)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgeship-runner", description="Run an edgeship bundle's models on this device.")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser, bundle_required: bool = True) -> None:
        sp.add_argument("bundle", nargs="?", default=None, help="bundle folder (default: the runner's own folder)")
        sp.add_argument("--json", metavar="FILE", default=None, help="also write the result to FILE")

    c = sub.add_parser("check", help="device facts and whether each artifact can run here")
    common(c)
    c.set_defaults(func=cmd_check)
    for name, func, helptext in (
        ("parity", cmd_parity, "verify artifacts and run the bundled parity inputs"),
        ("bench", cmd_bench, "latency protocol: load, first run, warm-up, timed runs"),
    ):
        sp = sub.add_parser(name, help=helptext)
        common(sp)
        sp.add_argument("--artifact", action="append", help="only this artifact (file name or format:recipe); repeatable")
        sp.add_argument("--threads", type=int, default=None, help="threads (default: the target profile's)")
        sp.set_defaults(func=func)
    bench = sub.choices["bench"]
    bench.add_argument("--runs", type=int, default=100, help="timed runs (default 100)")
    bench.add_argument("--warmup", type=int, default=10, help="untimed warm-up runs (default 10)")
    bench.add_argument("--seconds", type=float, default=None, help="stop timing after this many seconds")
    sub.choices["parity"].add_argument("--out", default=None, help="folder for the outputs (default BUNDLE/device)")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    if args.command != "check" and args.bundle is None:
        args.bundle = default_bundle()
    elif args.command == "check" and args.bundle is None and os.path.isfile(os.path.join(default_bundle(), "manifest.json")):
        args.bundle = default_bundle()
    try:
        return args.func(args)
    except RunnerError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.code
    except Exception as e:  # a runtime's own error: one line, not a traceback
        from .runners import RuntimeMissing

        if isinstance(e, RuntimeMissing):
            print(f"error: {e}", file=sys.stderr)
            return EXIT_RUNTIME
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
