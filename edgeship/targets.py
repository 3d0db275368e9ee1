"""Hardware target profiles: TOML files read into one validated, typed object.

A profile says once what a device needs (artifacts, budgets, runtime options), so every
build for it is the same. Validation is strict: an unknown key is an error with the close
match, because a silently ignored typo in a budget is a parity gate that never fires.
"""
from __future__ import annotations

import difflib
import re
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from .errors import UsageError
from .parity import BUDGET_METRICS
from .recipes import FORMATS, RECIPES
from .resources import targets_dir

# Each device runtime and the artifact format it runs.
RUNTIME_FORMATS: Dict[str, str] = {
    "ai-edge-litert": "tflite",
    "tflite-runtime": "tflite",
    "tf.lite": "tflite",
    "onnxruntime": "onnx",
}
RUNTIMES = tuple(RUNTIME_FORMATS)
IO_DTYPES = ("float32", "int8", "uint8")
ARCHES = ("aarch64", "armv7l", "x86_64", "riscv64", "any")
# onnxruntime's execution provider names (a typo would otherwise fall back to CPU in silence).
ONNX_PROVIDERS = (
    "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider", "ROCMExecutionProvider",
    "MIGraphXExecutionProvider", "OpenVINOExecutionProvider", "DnnlExecutionProvider", "DmlExecutionProvider",
    "CoreMLExecutionProvider", "NnapiExecutionProvider", "QNNExecutionProvider", "XnnpackExecutionProvider",
    "ACLExecutionProvider", "ArmNNExecutionProvider", "RknpuExecutionProvider", "VitisAIExecutionProvider",
    "CANNExecutionProvider", "WebGpuExecutionProvider", "AzureExecutionProvider",
)
# TFLite delegates by name (the runner maps them to their shared libraries); a path to a
# vendor's delegate library (.so) is accepted as well.
TFLITE_DELEGATES = ("gpu", "edgetpu", "hexagon")


@dataclass
class ArtifactSpec:
    format: str
    recipe: str
    required: bool = True

    @property
    def key(self) -> str:
        return f"{self.format}:{self.recipe}"

    @property
    def filename(self) -> str:
        return f"model_{self.recipe}.{self.format}"


@dataclass
class RuntimeOptions:
    threads: Optional[int] = None
    xnnpack: bool = True
    tflite_delegates: List[str] = field(default_factory=list)
    onnx_providers: List[str] = field(default_factory=lambda: ["CPUExecutionProvider"])
    reduce_range: bool = False
    warmup: int = 10
    runs: int = 100


@dataclass
class IOSpec:
    """Input/output dtypes of integer recipes (float recipes keep float32 I/O)."""

    input_dtype: str = "float32"
    output_dtype: str = "float32"


@dataclass
class TargetProfile:
    name: str
    description: str
    arch: str
    devices: List[str]
    cpu: str
    runtimes: List[str]
    artifacts: List[ArtifactSpec]
    budgets: Dict[str, Dict[str, float]]
    runtime: RuntimeOptions
    io: IOSpec
    install: str
    latency_budget_ms: Optional[float] = None
    notes: List[str] = field(default_factory=list)
    unavailable: Dict[str, str] = field(default_factory=dict)
    source: str = ""

    def budget_for(self, recipe: str) -> Dict[str, float]:
        return dict(self.budgets.get(recipe, {}))

    def format_unavailable(self, fmt: str) -> Optional[str]:
        """Why this device cannot run ``fmt`` artifacts, or None when it can."""
        if fmt in self.unavailable:
            return self.unavailable[fmt]
        if self.runtimes and not any(RUNTIME_FORMATS[r] == fmt for r in self.runtimes):
            return f"none of this target's runtimes ({', '.join(self.runtimes)}) runs {fmt} models"
        return None

    @property
    def buildable(self) -> List[ArtifactSpec]:
        """The artifacts the build produces: those whose format the device can run."""
        return [a for a in self.artifacts if self.format_unavailable(a.format) is None]

    @property
    def skipped(self) -> Dict[str, str]:
        """{artifact key: why it is not built for this target}."""
        return {a.key: str(self.format_unavailable(a.format)) for a in self.artifacts if a not in self.buildable}

    def skipped_by_reason(self) -> Dict[str, List[str]]:
        """{why: [artifact keys]}: one line per reason in summaries and reports."""
        out: Dict[str, List[str]] = {}
        for key, why in self.skipped.items():
            out.setdefault(why, []).append(key)
        return out

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["not_built"] = self.skipped
        return d


# key -> (type description, check) for the top level; nested tables are checked below.
_TOP_KEYS = {
    "name": str,
    "description": str,
    "extends": str,
    "arch": str,
    "devices": list,
    "cpu": str,
    "runtimes": list,
    "artifacts": list,
    "budgets": dict,
    "runtime": dict,
    "io": dict,
    "install": str,
    "latency_budget_ms": (int, float),
    "notes": list,
    "unavailable": dict,
}
# Lists whose items must be strings.
_STRING_LISTS = ("devices", "runtimes", "notes", "tflite_delegates", "onnx_providers")
_ARTIFACT_KEYS = {"format": str, "recipe": str, "required": bool}
_RUNTIME_KEYS = {
    "threads": int,
    "xnnpack": bool,
    "tflite_delegates": list,
    "onnx_providers": list,
    "reduce_range": bool,
    "warmup": int,
    "runs": int,
}
_IO_KEYS = {"input_dtype": str, "output_dtype": str}


_BUDGET_KEYS = {**{m: (int, float) for m in BUDGET_METRICS}, "quantile": float, "top_k": int}
# The range a budget threshold can take: a value outside it could never pass (or never fail), so
# it is refused at load time rather than failing every artifact after a full build.
_METRIC_RANGES = {
    "max_abs": (0.0, None), "mean_abs": (0.0, None), "max_rel": (0.0, None), "quantile_abs": (0.0, None),
    "cosine": (-1.0, 1.0), "snr_db": (-300.0, 300.0), "top1_agreement": (0.0, 1.0), "topk_agreement": (0.0, 1.0),
    "accuracy": (0.0, 1.0), "accuracy_drop": (0.0, 1.0),
}
# Bounds of every count and time in a profile: a build must end (runs = 10**12 never would).
LIMITS = {"threads": (1, 1024), "warmup": (0, 100_000), "runs": (1, 1_000_000), "top_k": (1, 100_000)}
LATENCY_BUDGET_MS = (0.0, 3_600_000.0)  # (exclusive minimum, maximum): at most an hour per run


def _check_number(origin: str, where: str, key: str, value: Any, lo: Optional[float], hi: Optional[float], lo_open: bool = False) -> None:
    """A finite number within [lo, hi] (lo excluded when ``lo_open``), else one line naming the key."""
    import math

    if isinstance(value, float) and not math.isfinite(value):
        raise UsageError(f"{origin}: {where}{key} must be a finite number, got {value}")
    low_bad = lo is not None and (value <= lo if lo_open else value < lo)
    if low_bad or (hi is not None and value > hi):
        rng = f"{'(' if lo_open else '['}{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
        raise UsageError(f"{origin}: {where}{key} must be in {rng}, got {value}")


def _budget_table(where: str, table: Dict[str, Any], origin: str) -> Dict[str, Any]:
    """metric = threshold, the metric parameters (quantile, top_k), and [outputs.NAME] overrides."""
    table = dict(table)
    per_output = table.pop("outputs", {})
    _check_table(where, table, _BUDGET_KEYS, origin)
    if "quantile" in table:
        _check_number(origin, f"{where}.", "quantile", table["quantile"], 0.0, 1.0, lo_open=True)
    if "top_k" in table:
        _check_number(origin, f"{where}.", "top_k", table["top_k"], *LIMITS["top_k"])
    for metric, (lo, hi) in _METRIC_RANGES.items():
        if metric in table:
            _check_number(origin, f"{where}.", metric, table[metric], lo, hi)
    out: Dict[str, Any] = {k: (int(v) if k == "top_k" else float(v)) for k, v in table.items()}
    if per_output:
        if not isinstance(per_output, dict) or not all(isinstance(t, dict) for t in per_output.values()):
            raise UsageError(f"{origin}: {where}.outputs must hold one table per output name, e.g. [{where}.outputs.probs]")
        out["outputs"] = {name: _budget_table(f"{where}.outputs.{name}", t, origin) for name, t in per_output.items()}
    return out


def builtin_names() -> List[str]:
    return sorted(p.stem for p in targets_dir().glob("*.toml"))


def _suggest(word: str, choices: Any) -> str:
    """' (did you mean X?)' for the closest choice, ignoring case (CudaExecutionProvider -> CUDA...)."""
    by_lower = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(str(word).lower(), list(by_lower), n=1, cutoff=0.6)
    return f" (did you mean {by_lower[close[0]]}?)" if close else ""


def _type_name(t: Any) -> str:
    if isinstance(t, tuple):
        return " or ".join(x.__name__ for x in t)
    return {str: "a string", int: "an integer", bool: "true/false", list: "a list", dict: "a table"}.get(
        t, t.__name__
    )


def _check_table(where: str, table: Dict[str, Any], schema: Dict[str, Any], origin: str) -> None:
    for key, value in table.items():
        if key not in schema:
            raise UsageError(f"{origin}: unknown key '{key}' in {where}{_suggest(key, schema)}")
        want = schema[key]
        ok = isinstance(value, want) and not (want is int and isinstance(value, bool))
        if want == (int, float) and isinstance(value, bool):
            ok = False
        if not ok:
            raise UsageError(
                f"{origin}: '{key}' in {where} must be {_type_name(want)}, got {type(value).__name__} {value!r}"
            )
        if key in _STRING_LISTS:
            bad = [v for v in value if not isinstance(v, str)]
            if bad:
                raise UsageError(f"{origin}: '{key}' in {where} must be a list of strings, got {bad[0]!r}")


def _resolve_path(ref: str, relative_to: Optional[Path]) -> Path:
    """A built-in name, or a path to a TOML file (inside the extending file's folder if named in one)."""
    p = Path(ref)
    if p.suffix == ".toml" or "/" in ref or "\\" in ref:
        if relative_to is not None:  # named inside a profile: a file beside it, never one elsewhere
            from .runner.bundlefmt import BundleError, contained

            try:
                p = Path(contained(str(relative_to.parent), ref, f"{relative_to}: extends"))
            except BundleError as e:
                raise UsageError(str(e)) from None
        if not p.is_file():
            raise UsageError(f"target profile file not found: {ref}")
        return p
    builtin = targets_dir() / f"{ref}.toml"
    if not builtin.is_file():
        names = builtin_names()
        raise UsageError(
            f"unknown target '{ref}'{_suggest(ref, names)}; built-in targets: {', '.join(names)}, "
            "or give a path to a .toml profile"
        )
    return builtin


def _read_toml(path: Path) -> Dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{path}: not valid TOML: {e}") from None
    except UnicodeDecodeError:  # a binary file given as a profile
        raise UsageError(f"{path}: not valid TOML: not UTF-8 text (a binary file?)") from None
    except OSError as e:
        raise UsageError(f"cannot read target profile {path}: {e.strerror}") from None


def _merge(base: Dict[str, Any], over: Dict[str, Any]) -> Dict[str, Any]:
    """Tables merge key by key; lists and scalars in ``over`` replace the base's."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _load_raw(ref: str, relative_to: Optional[Path], chain: List[str]) -> Dict[str, Any]:
    path = _resolve_path(ref, relative_to)
    key = str(path.resolve())
    if key in chain:
        names = [Path(c).stem for c in chain + [key]]
        raise UsageError(f"{path}: cycle in 'extends': {' -> '.join(names)}")
    raw = _read_toml(path)
    _check_table("the profile", raw, _TOP_KEYS, str(path))
    raw.setdefault("name", path.stem)
    parent = raw.pop("extends", None)
    if parent:
        base = _load_raw(parent, path, chain + [key])
        base.pop("name", None)
        raw = _merge(base, raw)
    raw["_source"] = str(path)
    return raw


def load_target(ref: str) -> TargetProfile:
    """Load a built-in profile by name, or a user's TOML file by path, with ``extends`` resolved."""
    raw = _load_raw(ref, None, [])
    origin = raw.pop("_source")
    return _validate(raw, origin)


def target_refs(spec: str) -> List[str]:
    """``--target`` as a list: a name, a .toml path, a comma-separated list of either, or ``all``."""
    refs = [r.strip() for r in spec.split(",") if r.strip()]
    if not refs:
        raise UsageError("--target is empty: give a built-in name, a .toml path, a comma-separated list, or 'all'")
    out: List[str] = []
    for r in refs:
        for name in builtin_names() if r == "all" else [r]:
            if name not in out:
                out.append(name)
    return out


def load_targets(spec: Union[str, Sequence[str]]) -> List[TargetProfile]:
    """Every profile ``spec`` names (a ``--target`` string, or a list of single references), all
    validated before any build work starts."""
    refs = target_refs(spec) if isinstance(spec, str) else list(spec)
    profiles = [load_target(r) for r in refs]
    seen: Dict[str, str] = {}
    for p in profiles:
        if p.name in seen:
            raise UsageError(
                f"two target profiles are both named '{p.name}' ({seen[p.name]} and {p.source}): "
                "their bundles would overwrite each other; give one a different 'name'"
            )
        seen[p.name] = p.source
    return profiles


def _validate(raw: Dict[str, Any], origin: str) -> TargetProfile:
    for k in ("arch", "artifacts"):
        if k not in raw:
            raise UsageError(f"{origin}: missing required key '{k}'")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", raw["name"]):
        raise UsageError(
            f"{origin}: name '{raw['name']}' must be letters, digits, '.', '_' or '-' (it names the bundle folder)"
        )
    specs = []
    for i, a in enumerate(raw["artifacts"]):
        where = f"artifacts[{i}]"
        if not isinstance(a, dict):
            raise UsageError(f"{origin}: {where} must be a table with format and recipe")
        _check_table(where, a, _ARTIFACT_KEYS, origin)
        for k in ("format", "recipe"):
            if k not in a:
                raise UsageError(f"{origin}: {where} is missing '{k}'")
        if a["format"] not in FORMATS:
            raise UsageError(
                f"{origin}: unknown format '{a['format']}' in {where}{_suggest(a['format'], FORMATS)}; "
                f"known: {', '.join(FORMATS)}"
            )
        if a["recipe"] not in RECIPES:
            raise UsageError(
                f"{origin}: unknown recipe '{a['recipe']}' in {where}{_suggest(a['recipe'], RECIPES)}; "
                f"known: {', '.join(RECIPES)}"
            )
        specs.append(ArtifactSpec(a["format"], a["recipe"], a.get("required", True)))
    if not specs:
        raise UsageError(f"{origin}: 'artifacts' is empty: name at least one format and recipe")
    seen = set()
    for s in specs:
        if s.key in seen:
            raise UsageError(f"{origin}: artifact {s.key} is listed twice")
        seen.add(s.key)

    budgets: Dict[str, Dict[str, float]] = {}
    for recipe, table in raw.get("budgets", {}).items():
        if recipe not in RECIPES:
            raise UsageError(
                f"{origin}: unknown recipe '{recipe}' in budgets{_suggest(recipe, RECIPES)}; known: {', '.join(RECIPES)}"
            )
        if not isinstance(table, dict):
            raise UsageError(f"{origin}: budgets.{recipe} must be a table of metric = threshold")
        budgets[recipe] = _budget_table(f"budgets.{recipe}", table, origin)

    rt = raw.get("runtime", {})
    _check_table("[runtime]", rt, _RUNTIME_KEYS, origin)
    for k in ("threads", "warmup", "runs"):
        if rt.get(k) is not None:
            _check_number(origin, "runtime.", k, rt[k], *LIMITS[k])
    if raw.get("latency_budget_ms") is not None:
        _check_number(origin, "", "latency_budget_ms", raw["latency_budget_ms"], *LATENCY_BUDGET_MS, lo_open=True)
    for p in rt.get("onnx_providers", []):
        if p not in ONNX_PROVIDERS:
            raise UsageError(
                f"{origin}: unknown execution provider '{p}' in runtime.onnx_providers{_suggest(p, ONNX_PROVIDERS)}"
            )
    for d in rt.get("tflite_delegates", []):
        if d not in TFLITE_DELEGATES and not d.endswith((".so", ".dylib", ".dll")) and ".so." not in d:
            raise UsageError(
                f"{origin}: unknown TFLite delegate '{d}' in runtime.tflite_delegates{_suggest(d, TFLITE_DELEGATES)}; "
                f"known: {', '.join(TFLITE_DELEGATES)}, or a path to a delegate library (.so)"
            )
    io = raw.get("io", {})
    _check_table("[io]", io, _IO_KEYS, origin)
    for k, v in io.items():
        if v not in IO_DTYPES:
            raise UsageError(f"{origin}: io.{k} must be one of {', '.join(IO_DTYPES)}, got '{v}'{_suggest(v, IO_DTYPES)}")
    runtimes = raw.get("runtimes", [])
    for r in runtimes:
        if r not in RUNTIMES:
            raise UsageError(f"{origin}: unknown runtime '{r}'{_suggest(str(r), RUNTIMES)}; known: {', '.join(RUNTIMES)}")
    if raw["arch"] not in ARCHES:
        raise UsageError(f"{origin}: unknown arch '{raw['arch']}'{_suggest(raw['arch'], ARCHES)}; known: {', '.join(ARCHES)}")
    unavailable = raw.get("unavailable", {})
    for fmt, why in unavailable.items():
        if fmt not in FORMATS:
            raise UsageError(f"{origin}: unknown format '{fmt}' in [unavailable]{_suggest(fmt, FORMATS)}; known: {', '.join(FORMATS)}")
        if not isinstance(why, str) or not why.strip():
            raise UsageError(f"{origin}: unavailable.{fmt} must be a string saying why the device cannot run {fmt}")
    return _check_consistent(TargetProfile(
        name=raw["name"],
        description=raw.get("description", ""),
        arch=raw["arch"],
        devices=list(raw.get("devices", [])),
        cpu=raw.get("cpu", ""),
        runtimes=list(runtimes),
        artifacts=specs,
        budgets=budgets,
        runtime=RuntimeOptions(**rt),
        io=IOSpec(**io),
        install=raw.get("install", ""),
        latency_budget_ms=raw.get("latency_budget_ms"),
        notes=list(raw.get("notes", [])),
        unavailable=dict(unavailable),
        source=origin,
    ))


def _check_consistent(p: TargetProfile) -> TargetProfile:
    """Rules across fields: every built artifact has a budget, integer-only means integer I/O."""
    origin = p.source
    built = p.buildable
    if not built:
        raise UsageError(
            f"{origin}: no artifact can be built: every format listed is unavailable on this target "
            f"({'; '.join(f'{k}: {v}' for k, v in p.skipped.items())})"
        )
    for a in built:
        if RECIPES[a.recipe].integer_only:
            if a.format != "tflite":
                raise UsageError(
                    f"{origin}: recipe {a.recipe} (integer-only) is built as TFLite only: a quantized ONNX model keeps "
                    "float input/output around QuantizeLinear/DequantizeLinear; use recipe int8 for onnx"
                )
            if "float32" in (p.io.input_dtype, p.io.output_dtype):
                raise UsageError(
                    f"{origin}: recipe {a.recipe} is integer-only, so [io] input_dtype and output_dtype must be "
                    f"int8 or uint8, not {p.io.input_dtype}/{p.io.output_dtype}"
                )
        if a.recipe not in p.budgets:
            raise UsageError(
                f"{origin}: artifact {a.key} has no parity budget: add a [budgets.{a.recipe}] table "
                "(e.g. top1_agreement = 0.99), or parity could never fail"
            )
    return p
