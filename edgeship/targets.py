"""Hardware target profiles: TOML files read into one validated, typed object.

A profile says once what a device needs (artifacts, budgets, runtime options), so every
build for it is the same. Validation is strict: an unknown key is an error with the close
match, because a silently ignored typo in a budget is a parity gate that never fires.
"""
from __future__ import annotations

import difflib
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from .errors import UsageError
from .parity import BUDGET_METRICS
from .recipes import FORMATS, RECIPES
from .resources import targets_dir

RUNTIMES = ("ai-edge-litert", "tflite-runtime", "tf.lite", "onnxruntime")
IO_DTYPES = ("float32", "int8", "uint8")


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
    source: str = ""

    def budget_for(self, recipe: str) -> Dict[str, float]:
        return dict(self.budgets.get(recipe, {}))

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


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
}
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


def builtin_names() -> List[str]:
    return sorted(p.stem for p in targets_dir().glob("*.toml"))


def _suggest(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


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


def _resolve_path(ref: str, relative_to: Optional[Path]) -> Path:
    """A built-in name, or a path to a TOML file (relative to the extending file if inside one)."""
    p = Path(ref)
    if p.suffix == ".toml" or "/" in ref or "\\" in ref:
        if not p.is_absolute() and relative_to is not None and not p.exists():
            p = relative_to.parent / p
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


def _validate(raw: Dict[str, Any], origin: str) -> TargetProfile:
    for k in ("arch", "artifacts"):
        if k not in raw:
            raise UsageError(f"{origin}: missing required key '{k}'")
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
        _check_table(f"budgets.{recipe}", table, {m: (int, float) for m in BUDGET_METRICS}, origin)
        budgets[recipe] = {k: float(v) for k, v in table.items()}

    rt = raw.get("runtime", {})
    _check_table("[runtime]", rt, _RUNTIME_KEYS, origin)
    if rt.get("threads") is not None and rt["threads"] < 1:
        raise UsageError(f"{origin}: runtime.threads must be at least 1, got {rt['threads']}")
    io = raw.get("io", {})
    _check_table("[io]", io, _IO_KEYS, origin)
    for k, v in io.items():
        if v not in IO_DTYPES:
            raise UsageError(f"{origin}: io.{k} must be one of {', '.join(IO_DTYPES)}, got '{v}'{_suggest(v, IO_DTYPES)}")
    runtimes = raw.get("runtimes", [])
    for r in runtimes:
        if r not in RUNTIMES:
            raise UsageError(f"{origin}: unknown runtime '{r}'{_suggest(str(r), RUNTIMES)}; known: {', '.join(RUNTIMES)}")
    return TargetProfile(
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
        source=origin,
    )
