"""The bundle: artifacts, parity data, manifest, reports and the on-device runner, in one folder.

Written into a temporary folder beside the destination and renamed into place, so an
interrupted or failed build never leaves a half bundle that looks complete.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shutil
import zipfile
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional

import numpy as np

from . import __version__
from .errors import CheckFailed, DeviceError, EdgeshipError, UsageError
from .runner import bundlefmt
from .runner.bundlefmt import MANIFEST, MANIFEST_SCHEMA, RUNNER_FILE, BundleError
from .sources import sha256_file

if TYPE_CHECKING:
    from .build import BuildResult

SCHEMA = "edgeship.report/1"
LIBRARIES = ("numpy", "tensorflow-cpu", "tensorflow", "keras", "onnx", "onnxruntime", "tf2onnx", "ai-edge-litert", "opencv-python-headless")


def library_versions() -> Dict[str, str]:
    out = {}
    for lib in LIBRARIES:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            pass
    return out


def host_facts() -> Dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "machine": platform.machine(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "os": platform.platform(),
        "python": platform.python_version(),
    }


def report_data(result: "BuildResult") -> Dict[str, Any]:
    """Everything a report renders, as plain JSON-able data (report.json is exactly this)."""
    arts = []
    for a in result.artifacts:
        p = result.parity[a.key]
        lat = result.latency.get(a.key)
        arts.append(
            {
                **a.to_dict(),
                "key": a.key,
                "file": f"artifacts/{a.filename}",
                "parity": p.to_dict(),
                "latency": lat.to_dict() if lat else None,
                "passed": result.artifact_passed(a),
                "diagnosis": result.diagnosis[a.key].to_dict() if a.key in result.diagnosis else None,
            }
        )
    return {
        "schema": SCHEMA,
        "edgeship_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": result.source.describe(),
        "target": result.target.to_dict(),
        "host": host_facts(),
        "libraries": library_versions(),
        "training": result.training,
        "parity_inputs": {
            "origin": result.dataset.origin,
            "samples": result.dataset.n_heldout,
            "generated": result.dataset.generated,
            "labels": result.dataset.labels is not None,
        },
        "preprocessing": result.dataset.preprocessing,
        "class_names": result.dataset.class_names,
        "artifacts": arts,
        "warnings": result.warnings,
        "skipped": result.skipped,
        "failed_artifacts": [f.to_dict() for f in result.failed.values()],
        "passed": result.passed,
        "failures": result.failures,
        "build": result.build_info(),
    }


COMPRESS_IF_BELOW = 0.8  # compressed/raw size of a probe under which compression is worth its time


def worth_compressing(arrays: Dict[str, np.ndarray], probe_bytes: int = 1 << 20) -> bool:
    """Whether deflate shrinks these arrays enough to pay for itself, judged on a 1 MiB probe.

    Real images and labels compress to a fraction; generated random inputs and float outputs
    gain about 10 % for seconds of deflate on large models (35 MB: 2 s), so they are stored.
    """
    import zlib

    try:
        each = probe_bytes // max(1, len(arrays))
        raw = b"".join(np.ascontiguousarray(a).reshape(-1).view(np.uint8)[:each].tobytes() for a in arrays.values())
    except (TypeError, ValueError):  # object arrays and the like: let NumPy deal with them as before
        return True
    if len(raw) < 4096:
        return True  # small: compression costs nothing worth measuring
    return len(zlib.compress(raw, 1)) / len(raw) < COMPRESS_IF_BELOW


def savez(path: Path, arrays: Dict[str, np.ndarray]) -> None:
    """np.savez_compressed when it pays (see worth_compressing), np.savez otherwise; np.load reads both."""
    (np.savez_compressed if worth_compressing(arrays) else np.savez)(path, **arrays)


def write_runner(dest: Path) -> Path:
    """The on-device runner as one runnable file (a zipapp of edgeship/runner, run by python3)."""
    src = Path(__file__).parent / "runner"
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(src.glob("*.py")):
            z.write(f, f"edgeship_runner/{f.name}")
        z.writestr("__main__.py", "import sys\nfrom edgeship_runner.cli import main\n\nsys.exit(main())\n")
    return dest


def write(work: Path, result: "BuildResult", reference: Dict[str, np.ndarray], outputs: Dict[str, Dict[str, np.ndarray]]) -> None:
    """Fill ``work`` with everything but the artifacts (already there); the manifest comes last."""
    from . import report

    parity_dir = work / "parity"
    parity_dir.mkdir()
    ds = result.dataset
    inputs = dict(ds.heldout)
    if ds.labels is not None:
        inputs["__labels__"] = ds.labels
    savez(parity_dir / "inputs.npz", inputs)
    savez(parity_dir / "reference.npz", reference)
    savez(parity_dir / "calibration.npz", ds.calibration)  # lets `validate --explain` re-calibrate
    for a in result.artifacts:
        savez(parity_dir / f"host_{a.filename}.npz", outputs[a.key])
    write_runner(work / RUNNER_FILE)
    data = report_data(result)
    report.write_all(data, work)
    manifest = {
        "manifest_schema": MANIFEST_SCHEMA,
        **data,
        "runner": {"file": RUNNER_FILE, "run": f"python3 {RUNNER_FILE} --help"},
        "files": {
            str(p.relative_to(work)): {"sha256": sha256_file(p), "size": p.stat().st_size}
            for p in sorted(work.rglob("*"))
            if p.is_file()
        },
    }
    (work / MANIFEST).write_text(json.dumps(manifest, indent=2, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def publish(work: Path, out_dir: Path) -> Path:
    """Rename the finished ``work`` folder to ``out_dir``, replacing an older bundle only now."""
    old: Optional[Path] = None
    os.chmod(work, 0o755)  # mkdtemp made it private
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, old)
    os.replace(work, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return out_dir


def host_error(e: BundleError) -> EdgeshipError:
    """The runner layer's refusal as the host's error with the same exit code."""
    cls = {1: CheckFailed, 4: DeviceError}.get(e.code, UsageError)
    return cls(str(e))


def inside(bundle: Path, rel: Any, what: str = "path") -> Path:
    """``bundle / rel`` resolved, refused (exit 2) when it leaves the bundle: every path a bundle names goes through here."""
    try:
        return Path(bundlefmt.contained(str(bundle), rel, what))
    except BundleError as e:
        raise host_error(e) from None


def load_manifest(bundle: Path) -> Dict[str, Any]:
    """The checked manifest (bundlefmt.load_manifest): a malformed one is one line naming the field, exit 2."""
    try:
        return bundlefmt.load_manifest(str(bundle))
    except BundleError as e:
        raise host_error(e) from None


def verify(bundle: Path, manifest: Optional[Dict[str, Any]] = None) -> Dict[str, str]:
    """{relative path: problem} for every file whose size or sha256 differs from the manifest."""
    manifest = manifest if manifest is not None else load_manifest(bundle)
    try:
        bad = bundlefmt.problems(str(bundle), manifest)
    except BundleError as e:
        raise host_error(e) from None
    return {rel: "missing" if why == "missing" else "sha256 mismatch (modified or truncated)" for rel, why in bad.items()}


def check_signature(bundle: Path, manifest: Dict[str, Any], allowed_signers: Optional[str], rels: Optional[List[str]] = None) -> str:
    """The signer's principal when the signature and (all, or the given) files check out; exit 1 otherwise."""
    if not allowed_signers:
        raise UsageError("--require-signature needs --allowed-signers FILE (ssh-keygen's allowed signers: PRINCIPAL KEYTYPE KEY per line)")
    try:
        return bundlefmt.verify_bundle(str(bundle), manifest, allowed_signers, rels)
    except BundleError as e:
        raise host_error(e) from None


def sign(bundle: Path, key: str) -> Path:
    """Sign ``bundle``'s manifest with an OpenSSH key (ssh-keygen -Y sign); the signature file."""
    try:
        return Path(bundlefmt.sign(str(bundle), key))
    except BundleError as e:
        raise host_error(e) from None
