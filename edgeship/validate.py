"""`edgeship validate`: re-run parity on a bundle (or one artifact) and, on request, explain it.

The result is report data in the report.json layout, so every renderer and `compare`
work on a validation exactly as on a build.
"""
from __future__ import annotations

import copy
import datetime as _dt
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .errors import UsageError
from .parity import compare
from .sources import Dataset, Source, sha256_file

Data = Dict[str, Any]
LABELS_KEY = "__labels__"


def load_npz(path: Path) -> Dict[str, np.ndarray]:
    try:
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read {path}: {e} (expected a .npz of arrays named like the model inputs)") from None


# --------------------------------------------------------------------------- references


def load_reference(path: Path) -> Tuple[Optional[Source], Any]:
    """(Keras source or None, a callable feed -> outputs) for a reference model file."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"reference model not found: {path}")
    if path.suffix in (".keras", ".h5") or path.is_dir():  # Keras files and SavedModel folders
        from .sources.load import load_model

        src = load_model(str(path))
        return src, src.predict
    if path.suffix == ".onnx":  # as a source too, so a TFLite artifact built from it (onnx2tf) can be diagnosed
        src = _onnx_source(path)
        if src is not None:
            return src, src.predict
    if path.suffix in (".onnx", ".tflite"):
        from .runner.runners import open_runner

        runner = open_runner(str(path))
        return None, runner.run
    raise UsageError(f"unsupported reference model {path}: expected .keras, .h5, .onnx or .tflite")


def bundle_source(manifest: Data) -> Optional[Source]:
    """The build's own Keras or ONNX model, when it is still where the manifest says and unchanged."""
    m = manifest.get("model", {})
    p = Path(m.get("path") or "")
    if not (p.is_file() and sha256_file(p) == m.get("sha256")):
        return None
    if m.get("kind") == "keras":
        from .sources.keras import load_keras

        return load_keras(p)
    if m.get("kind") == "onnx":
        shapes = {i["name"]: [1, *i["shape"][1:]] for i in m.get("inputs", []) if None not in i["shape"][1:]}
        return _onnx_source(p, shapes)
    return None


def _onnx_source(path: Path, shapes: Optional[Dict[str, List[int]]] = None) -> Optional[Source]:
    """An ONNX model as a source; None when its shapes are not fixed (it still serves as a runner)."""
    from .sources.load import load_model

    try:
        return load_model(str(path), input_shapes=shapes or None)
    except UsageError:
        return None


# --------------------------------------------------------------------------- generated inputs


def generated_inputs(infos: List[Any], n: int = 64, seed: int = 0) -> Tuple[Dict[str, np.ndarray], str]:
    """Inputs that respect each input's dtype and range: a quantized input's representable float
    range, integers within their type, floats in [0, 1). Returns (feed, description)."""
    rng = np.random.default_rng(seed)
    feed, how = {}, []
    for t in infos:
        shape = [n] + [d if d and d > 0 else 1 for d in list(t.shape)[1:]]
        kind = np.dtype(t.dtype).kind
        if t.quantized:
            info = np.iinfo(np.dtype(t.dtype))
            lo, hi = (info.min - t.zero_point) * t.scale, (info.max - t.zero_point) * t.scale
            feed[t.name] = rng.uniform(lo, hi, shape).astype(np.float32)
            how.append(f"{t.name}: uniform [{lo:.3g}, {hi:.3g}] (its int8 range)")
        elif kind in "iu":
            hi = min(int(np.iinfo(np.dtype(t.dtype)).max), 255)
            feed[t.name] = rng.integers(0, hi + 1, shape).astype(t.dtype)
            how.append(f"{t.name}: integers [0, {hi}]")
        else:
            feed[t.name] = rng.random(shape, dtype=np.float32)
            how.append(f"{t.name}: uniform [0, 1)")
    return feed, f"generated ({n} samples; {'; '.join(how)})"


# --------------------------------------------------------------------------- validation


def _recipe_of(path: Path) -> str:
    m = re.match(r"model_(\w+)\.(tflite|onnx)$", path.name)
    return m.group(1) if m else "fp32"


def _run(path: Path, fmt: str, feed: Dict[str, np.ndarray], target: Data) -> Dict[str, np.ndarray]:
    import os

    from .runner.runners import open_runner

    rt = target.get("runtime", {})
    opts: Dict[str, Any] = {"use_xnnpack": rt.get("xnnpack", True)} if fmt == "tflite" else {"providers": rt.get("onnx_providers")}
    threads = max(1, min(rt.get("threads") or os.cpu_count() or 1, os.cpu_count() or 1))
    return open_runner(str(path), fmt, threads=threads, **opts).run(feed)


def _explain(
    a: Data, path: Path, feed: Dict[str, np.ndarray], source: Optional[Source], calibration: Dict[str, np.ndarray], float_onnx: Optional[Path]
) -> Optional[Data]:
    from .diagnose import diagnose
    from .recipes import RECIPES

    recipe = RECIPES.get(a["recipe"])
    if recipe is None or not recipe.needs_calibration:
        return None
    ds = Dataset(calibration=calibration, heldout=feed, labels=None, origin="")
    return diagnose(a["format"], path, feed, source=source, dataset=ds, float_onnx=float_onnx).to_dict()


def validate_bundle(
    bundle: Path,
    reference: Optional[Path] = None,
    artifacts: Optional[List[str]] = None,
    explain: bool = False,
    allowed_signers: Optional[str] = None,
    require_signature: bool = False,
) -> Tuple[Data, List[str]]:
    """Re-run every (or the named) artifact of ``bundle`` on its bundled inputs.

    Returns (report data, notes). The reference is the bundled reference outputs, or the
    outputs of the ``reference`` model on the same inputs. A file that differs from the manifest
    fails the validation (exit 1); with ``require_signature`` (or ``allowed_signers`` and a signed
    bundle) a bad or missing signature, or any changed file, is refused before anything runs.
    """
    from . import bundle as bundle_mod
    from .runner.bundlefmt import PARITY_CALIBRATION, PARITY_INPUTS, PARITY_REFERENCE, SIGNATURE

    bundle = Path(bundle)
    manifest = bundle_mod.load_manifest(bundle)
    if require_signature or (allowed_signers and bundle_mod.inside(bundle, SIGNATURE, "signature").is_file()):
        notes = [f"signed by {bundle_mod.check_signature(bundle, manifest, allowed_signers)}"]
    else:
        notes = []
    changed = bundle_mod.verify(bundle, manifest)
    notes += [f"{rel}: {why} since the build" for rel, why in changed.items()]
    feed = load_npz(bundle_mod.inside(bundle, PARITY_INPUTS, "file"))
    labels = feed.pop(LABELS_KEY, None)
    source = None
    if reference is not None:
        source, run_ref = load_reference(reference)
        ref = run_ref(feed)
        ref_from = f"reference model {reference}"
    else:
        ref = load_npz(bundle_mod.inside(bundle, PARITY_REFERENCE, "file"))
        ref_from = "the reference outputs in the bundle"
    target = manifest["target"]
    data = {k: copy.deepcopy(v) for k, v in manifest.items() if k not in ("files", "runner")}
    data["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    data["validation"] = {"bundle": str(bundle), "reference": ref_from, "explain": explain}
    names = {a["path"] for a in data["artifacts"]}
    for n in artifacts or []:
        if n not in names:
            raise UsageError(f"{bundle} has no artifact {n}; it has: {', '.join(sorted(names))}")
    data["artifacts"] = [a for a in data["artifacts"] if not artifacts or a["path"] in artifacts]
    calib: Dict[str, np.ndarray] = feed
    if explain:
        if bundle_mod.inside(bundle, PARITY_CALIBRATION, "file").is_file():
            calib = load_npz(bundle_mod.inside(bundle, PARITY_CALIBRATION, "file"))
        else:
            notes.append("no parity/calibration.npz in this bundle: the diagnosis calibrates on the parity inputs")
        if source is None:
            source = bundle_source(manifest)
    float_onnx = next((bundle_mod.inside(bundle, a["file"], "artifact file") for a in manifest["artifacts"] if a["format"] == "onnx" and a["recipe"] == "fp32"), None)
    if float_onnx is None and reference is not None and Path(reference).suffix == ".onnx":
        float_onnx = Path(reference)
    for a in data["artifacts"]:
        path = bundle_mod.inside(bundle, a["file"], "artifact file")
        if not path.is_file():
            raise UsageError(f"{path} is missing from the bundle (rebuild it, or copy the whole folder)")
        out = _run(path, a["format"], feed, target)
        budget = target.get("budgets", {}).get(a["recipe"], {})
        p = compare(a["path"], ref, out, budget, labels=labels, inputs_from=(manifest.get("parity_inputs") or {}).get("origin", "the bundle's parity inputs"))
        a["parity"] = p.to_dict()
        if explain:
            try:
                a["diagnosis"] = _explain(a, path, feed, source, calib, float_onnx)
            except UsageError as e:  # say what is missing for this one; the parity verdict still stands
                notes.append(f"no per-layer diagnosis: {e}")
                a["diagnosis"] = None
        a["passed"] = p.passed
    _finish(data)
    if changed:  # hashes catch accidents: a bundle that is not as built never validates
        data["failures"] += [f"{rel}: {why} since the build (not the file the manifest lists)" for rel, why in changed.items()]
        data["passed"] = False
    return data, notes


def validate_artifact(
    path: Path,
    reference: Optional[Path],
    inputs: Optional[Path] = None,
    target: str = "arm64",
    recipe: Optional[str] = None,
    explain: bool = False,
) -> Tuple[Data, List[str]]:
    """Parity of one artifact file against a reference model, on given or generated inputs."""
    from .bundle import SCHEMA
    from .runner.runners import open_runner
    from .targets import load_target

    path = Path(path)
    fmt = path.suffix.lstrip(".")
    if fmt not in ("tflite", "onnx"):
        raise UsageError(f"{path} is neither a bundle folder nor a .tflite/.onnx artifact")
    if reference is None:
        raise UsageError("validating a single artifact needs the model it came from: pass --reference model.keras (or .onnx/.tflite)")
    profile = load_target(target)
    recipe = recipe or _recipe_of(path)
    runner = open_runner(str(path), fmt)
    notes: List[str] = []
    labels = None
    if inputs is not None:
        feed = load_npz(Path(inputs))
        labels = feed.pop(LABELS_KEY, None)
        origin = f"user data: {inputs} ({len(next(iter(feed.values())))} samples)"
    else:
        feed, origin = generated_inputs(runner.inputs)
        notes.append("no --inputs given: parity ran on generated inputs; pass --inputs held_out.npz for real data")
    source, run_ref = load_reference(Path(reference))
    ref = run_ref(feed)
    out = runner.run(feed)
    p = compare(path.name, ref, out, profile.budget_for(recipe), labels=labels, inputs_from=origin)
    desc = runner.describe()
    a: Data = {
        "format": fmt,
        "recipe": recipe,
        "path": path.name,
        "file": str(path),
        "key": f"{fmt}:{recipe}",
        "size": path.stat().st_size,
        "sha256": sha256_file(path),
        "required": True,
        "inputs": desc["inputs"],
        "outputs": desc["outputs"],
        "parity": p.to_dict(),
        "latency": None,
        "passed": p.passed,
        "diagnosis": None,
    }
    if explain:
        float_onnx = Path(reference) if Path(reference).suffix == ".onnx" else None
        a["diagnosis"] = _explain(a, path, feed, source, feed, float_onnx)
        notes.append("per-layer diagnosis calibrated on the parity inputs (no calibration set with a single artifact)")
    data: Data = {
        "schema": SCHEMA,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": {"name": Path(reference).stem, "kind": Path(reference).suffix.lstrip("."), "path": str(reference), "sha256": sha256_file(Path(reference)) if Path(reference).is_file() else ""},
        "target": profile.to_dict(),
        "parity_inputs": {"origin": origin, "samples": len(next(iter(feed.values()))), "generated": inputs is None, "labels": labels is not None},
        "artifacts": [a],
        "warnings": [],
        "validation": {"artifact": str(path), "reference": str(reference), "explain": explain},
    }
    _finish(data)
    return data, notes


def _finish(data: Data) -> None:
    """Recompute the overall verdict from the artifacts (latency stays as the build measured it)."""
    failures = [f"{f['file']}: not built: {f['reason']}" for f in data.get("failed_artifacts") or [] if f["required"]]
    for a in data["artifacts"]:
        if a["required"]:
            failures += [f"{a['path']}: {m}" for m in a["parity"]["failures"]]
    data["failures"] = failures
    data["passed"] = not failures
