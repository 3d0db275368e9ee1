"""Bad inputs and the contract every one of them must meet, shared by tests/test_fuzz.py and
benchmarks/robustness.py.

A case is one real command (``edgeship ...`` or the bundle's runner) run in a child process, in a
sandbox: its own HOME, TMPDIR and working folder. The contract: a documented exit code, one
``error:`` line on stderr, no traceback, no crash or hang, and no file written outside the
folder the command may write (temporary files included).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import stat
import struct
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTED = {0, 1, 2, 3, 4, 130}
OUTCOMES = ("clean", "traceback", "crash", "wrong")
# State libraries keep on import, whatever the command: Keras' config (~/.keras/keras.json), and
# onnxruntime's telemetry database (~/.cache/Microsoft/DeveloperTools/.onnxruntime) with its
# fixed-name $TMPDIR/.ses file (`python -c "import onnxruntime"` writes both). Not outputs, not leaks.
LIBRARY_STATE = ("home/.keras", "home/.cache/Microsoft", "tmp/.ses")


@dataclass
class Case:
    name: str
    group: str  # crashes, profiles, data, reports, manifests, models, security, interrupts, cache ...
    argv: List[str]  # after "python": ["-m", "edgeship", ...] or [runner.pyz, ...]
    expect: Tuple[int, ...] = (2,)
    may_write: Tuple[str, ...] = ()  # folders (relative to the sandbox) the command may write into
    timeout: float = 180.0
    env: Dict[str, str] = field(default_factory=dict)
    signal_after: Optional[Tuple[str, int]] = None  # (stderr text to wait for, signal) for interrupt cases
    check: Optional[Callable[["Sandbox"], Optional[str]]] = None  # extra check: why it is wrong, or None


@dataclass
class Result:
    case: Case
    outcome: str
    why: str
    code: Optional[int]
    stderr: str
    seconds: float


class Sandbox:
    """A folder with home/, tmp/ and work/ for one case; everything else must stay as it was."""

    def __init__(self, root: Path) -> None:
        self.root = root
        for d in ("home", "tmp", "work"):
            (root / d).mkdir(parents=True, exist_ok=True)

    def snapshot(self) -> Dict[str, Tuple[int, float, bool]]:
        out = {}
        for p in self.root.rglob("*"):
            try:
                st = p.lstat()
            except OSError:
                continue
            out[str(p.relative_to(self.root))] = (st.st_size, st.st_mtime, stat.S_ISDIR(st.st_mode))
        return out


def _stray(before: Dict[str, Tuple[int, float, bool]], after: Dict[str, Tuple[int, float, bool]], may_write: Sequence[str]) -> List[str]:
    """Files created or changed outside the folders the command may write (tmp/ counts: a leak)."""
    allowed = tuple(a.rstrip("/") for a in may_write) + LIBRARY_STATE
    bad = []
    for rel, meta in after.items():
        if before.get(rel) == meta or (meta[2] and rel in before):  # unchanged, or a folder that was there
            continue
        if any(rel == a or rel.startswith(a + "/") for a in allowed):
            continue
        if meta[2] and any(a.startswith(rel + "/") for a in allowed):  # a new parent folder of an allowed one
            continue
        bad.append(rel)
    return sorted(bad)


def one_error_line(stderr: str) -> bool:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error:" in ln.lower()]
    return len(errors) == 1


def run_case(case: Case, sandbox: Sandbox, python: str = sys.executable) -> Result:
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TMPDIR")},
        "PYTHONPATH": str(ROOT),
        "HOME": str(sandbox.root / "home"),
        "TMPDIR": str(sandbox.root / "tmp"),
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "PYTHONUNBUFFERED": "1",
        **case.env,
    }
    before = sandbox.snapshot()
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [python, *case.argv], cwd=sandbox.root / "work", env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, errors="replace",
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    stderr, code = "", None
    try:
        if case.signal_after:
            text, sig = case.signal_after
            assert proc.stderr is not None
            lines = []
            for line in proc.stderr:
                lines.append(line)
                if text in line:
                    proc.send_signal(sig)
                    break
            stderr = "".join(lines)
        rest = proc.communicate(timeout=case.timeout)[1]
        stderr += rest or ""
        code = proc.returncode
    except subprocess.TimeoutExpired:
        proc.kill()
        stderr += proc.communicate()[1] or ""
    seconds = time.perf_counter() - t0
    after = sandbox.snapshot()
    extra = case.check(sandbox) if case.check is not None else None  # always: some checks also clean up (umount)
    if code is None:
        return Result(case, "crash", f"hung: no answer within {case.timeout:.0f} s", None, stderr, seconds)
    if code < 0 or (128 < code < 160 and code != 130):
        name = signal.Signals(-code if code < 0 else code - 128).name if abs(code) < 64 or code > 128 else str(code)
        return Result(case, "crash", f"killed by {name}", code, stderr, seconds)
    if "Traceback (most recent call last)" in stderr:
        return Result(case, "traceback", stderr.strip().splitlines()[-1][:200], code, stderr, seconds)
    why = []
    if code not in case.expect:
        why.append(f"exit {code}, expected {'/'.join(map(str, case.expect))}")
    if code not in DOCUMENTED:
        why.append(f"exit {code} is not documented")
    if code == 130:
        if not any(ln.startswith("interrupted") for ln in stderr.splitlines()):
            why.append("no 'interrupted' line on stderr")
    elif code != 0 and not one_error_line(stderr):
        why.append("not exactly one error: line on stderr")
    stray = _stray(before, after, case.may_write)
    if stray:
        why.append("wrote outside its folder: " + ", ".join(stray[:3]))
    if extra:
        why.append(extra)
    return Result(case, "wrong" if why else "clean", "; ".join(why), code, stderr, seconds)


def tally(results: Sequence[Result]) -> Dict[str, int]:
    out = {"tried": len(results)}
    out.update({o: sum(1 for r in results if r.outcome == o) for o in OUTCOMES})
    return out


# --------------------------------------------------------------------------- input makers

def edgeship(*args: str) -> List[str]:
    return ["-m", "edgeship", *args]


def copy_bundle(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest, symlinks=True)
    return dest


def rehash(bundle: Path, rel: str) -> None:
    """Make the manifest vouch for ``rel`` as it is now (a crafted bundle does exactly this)."""
    m = json.loads((bundle / "manifest.json").read_text())
    data = (bundle / rel).read_bytes()
    m.setdefault("files", {})[rel] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    (bundle / "manifest.json").write_text(json.dumps(m))


def flip_bytes(data: bytes, seed: int, n: int = 8) -> bytes:
    rng = np.random.default_rng(seed)
    b = bytearray(data)
    for _ in range(n):
        i = int(rng.integers(8, max(9, len(b))))
        if i < len(b):
            b[i] = int(rng.integers(0, 256))
    return bytes(b)


def retarget_tflite_tensor(src: Path, dest: Path, op: int = 0, field_name: str = "outputs", pos: int = 0, tensor: int = 22) -> Path:
    """A .tflite whose operator ``op`` reads or writes another tensor (a one-number edit of the
    flatbuffer): the class of file that crashes the LiteRT interpreter."""
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as S

    buf = src.read_bytes()
    m = S.ModelT.InitFromObj(S.Model.GetRootAsModel(buf, 0))
    o = m.subgraphs[0].operators[op]
    idx = list(getattr(o, field_name))
    idx[pos] = min(tensor, len(m.subgraphs[0].tensors) - 1)
    setattr(o, field_name, idx)
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    dest.write_bytes(bytes(b.Output()))
    return dest


def huge_onnx(dest: Path, dim: int = 10**9) -> Path:
    """A valid ONNX model (Relu) whose fixed input is [1, dim, dim]: terabytes of generated inputs."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, dim, dim])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, dim, dim])
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "huge", [x], [y])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), str(dest))
    return dest


PROFILE_LINES = [
    "[runtime]\nruns = 1000000000000", "[runtime]\nwarmup = 100000000000", "[runtime]\nthreads = 0",
    "[runtime]\nthreads = 100000", "[budgets.int8]\nsnr_db = nan", "[budgets.int8]\nmax_abs = -1",
    "[budgets.int8]\ntop1_agreement = 2", "latency_budget_ms = -5", "latency_budget_ms = nan", "[budgets.int8]\ntop_k = 0",
    "[budgets.int8]\ntop_k = -3", "[budgets.int8]\ncosine = 7", "[budgets.int8]\nquantile = 0", "[budgets.int8]\nsnr_db = inf",
    "[budgets.int8]\naccuracy_drop = -0.5", "[runtime]\nruns = 0", "[runtime]\nrunz = 5", "arch = 7",
    "[budgets.int8.outputs.nosuch]\nmax_abs = 0.1", "extends = \"p\"",
]


def profile_cases(sb: Sandbox) -> List[Case]:
    cases = []
    for i, line in enumerate(PROFILE_LINES):
        p = sb.root / "work" / f"p{i}.toml"
        p.write_text(f'extends = "arm64"\nname = "p{i}"\n{line}\n')
        if "outputs.nosuch" in line:  # only known once the model is loaded: a real (sample) build, exit 2 before converting
            cases.append(Case(f"profile: {line.splitlines()[-1]}", "profiles", edgeship("build", "-q", "--target", str(p), "--out", "out"), may_write=("work/out",)))
        else:
            cases.append(Case(f"profile: {line.splitlines()[-1]}", "profiles", edgeship("targets", "show", str(p))))
    b = sb.root / "work" / "binary.toml"
    b.write_bytes(bytes(range(256)) * 4)
    cases.append(Case("profile: binary .toml", "profiles", edgeship("targets", "show", str(b))))
    return cases


def report_cases(sb: Sandbox, report: Path) -> List[Case]:
    base = json.loads(report.read_text())
    muts: Dict[str, object] = {
        "a list": [1, 2], "not JSON": None, "empty object": {}, "schema 2": {**base, "schema": "edgeship.report/2"},
        "no artifacts": {k: v for k, v in base.items() if k != "artifacts"}, "artifacts a string": {**base, "artifacts": "x"},
        "check without threshold": None, "latency p50 a string": None, "device without name": {**base, "devices": [{"artifacts": []}]},
        "diagnosis rows not a list": None, "model a list": {**base, "model": []},
    }
    cases = []
    for i, (name, data) in enumerate(muts.items()):
        p = sb.root / "work" / f"r{i}.json"
        if name == "not JSON":
            p.write_text('{"schema": "edgeship.report/1", ')
        else:
            if data is None:
                d = json.loads(json.dumps(base))
                if name == "check without threshold":
                    del d["artifacts"][0]["parity"]["checks"][0]["threshold"]
                elif name == "latency p50 a string":
                    d["artifacts"][0]["latency"]["p50_ms"] = "fast"
                elif name == "diagnosis rows not a list":
                    d["artifacts"][0]["diagnosis"] = {"rows": 3}
                data = d
            p.write_text(json.dumps(data))
        # compare never reads a diagnosis: a malformed one may pass there (the renderers refuse it)
        cases.append(Case(f"report: {name} (compare)", "reports", edgeship("compare", str(report), str(p)), expect=(0, 2) if "diagnosis" in name else (2,)))
        cases.append(Case(f"report: {name} (report --format html)", "reports", edgeship("report", str(p), "--format", "html")))
    return cases


def data_cases(sb: Sandbox, model: Path) -> List[Case]:
    """Bad --data for a real Keras model (8x8x1 digits CNN, 10 classes)."""
    rng = np.random.default_rng(0)
    x = rng.random((40, 8, 8, 1)).astype(np.float32)
    y = np.arange(40) % 10
    arrays = {
        "strings": dict(x=np.array([["a"] * 64] * 40).reshape(40, 8, 8, 1), labels=y),
        "string labels": dict(x=x, labels=np.array(["cat"] * 40)),
        "2-D labels": dict(x=x, labels=np.zeros((40, 10))),
        "NaN labels": dict(x=x, labels=np.full(40, np.nan)),
        "labels of 10^12": dict(x=x, labels=np.full(40, 10**12)),
        "complex inputs": dict(x=x.astype(np.complex64) + 1j, labels=y),
        "all-NaN inputs": dict(x=np.full_like(x, np.nan), labels=y),
        "Inf inputs": dict(x=np.where(x > 0.9, np.inf, x), labels=y),
        "inputs of 1e30": dict(x=x * 1e30, labels=y),
        "wrong shape": dict(x=rng.random((40, 3, 3)).astype(np.float32), labels=y),
        "no samples": dict(x=np.zeros((0, 8, 8, 1), np.float32)),
    }
    cases = []
    for i, (name, arrs) in enumerate(arrays.items()):
        p = sb.root / "work" / f"d{i}.npz"
        np.savez(p, **arrs)
        cases.append(Case(f"data: {name}", "data", edgeship("build", "-q", "--model", str(model), "--data", str(p), "--out", "out"), may_write=("work/out",)))
    pk = sb.root / "work" / "pickled.npz"
    np.savez(pk, x=np.array([{"a": 1}] * 40, dtype=object))
    cases.append(Case("data: pickled object array", "data", edgeship("build", "-q", "--model", str(model), "--data", str(pk), "--out", "out"), may_write=("work/out",)))
    return cases


def model_cases(sb: Sandbox, tflite: Path, onnx_file: Path) -> List[Case]:
    w = sb.root / "work"
    cases = []
    crafted = retarget_tflite_tensor(tflite, w / "crafted.tflite")
    trunc = w / "truncated.tflite"
    trunc.write_bytes(tflite.read_bytes()[: len(tflite.read_bytes()) // 2])
    flipped = [w / f"flipped{i}.tflite" for i in range(3)]
    for i, f in enumerate(flipped):
        f.write_bytes(flip_bytes(tflite.read_bytes(), i))
    junk = w / "junk.onnx"
    junk.write_bytes(b"\x08\x07" + os.urandom(2000))
    onnx_trunc = w / "truncated.onnx"
    onnx_trunc.write_bytes(onnx_file.read_bytes()[:1000])
    huge = huge_onnx(w / "huge.onnx")
    for f in [crafted, trunc, *flipped, junk, onnx_trunc, huge]:
        cases.append(Case(f"model: build --model {f.name}", "models", edgeship("build", "-q", "--model", str(f), "--out", "out"), expect=(2,), may_write=("work/out",)))
        if f.suffix == ".tflite":
            cases.append(Case(f"model: validate {f.name}", "models", edgeship("validate", str(f), "--reference", str(tflite)), expect=(1, 2)))
    return cases


def manifest_cases(sb: Sandbox, bundle: Path) -> List[Case]:
    """Damaged manifests (missing keys, wrong types, not JSON), fed to validate, deploy and the runner."""
    w = sb.root / "work"
    cases = []
    muts = {
        "not JSON": "{", "a list": "[]", "no artifacts": "drop:artifacts", "no files": "drop:files", "no target": "drop:target",
        "artifacts a string": "set:artifacts=x", "artifact without file": "art:file", "artifact without format": "art:format",
        "files a list": "set:files=[]",
    }
    for i, (name, how) in enumerate(muts.items()):
        b = copy_bundle(bundle, w / f"m{i}")
        m = json.loads((b / "manifest.json").read_text())
        if how.startswith("drop:"):
            m.pop(how[5:], None)
            text = json.dumps(m)
        elif how.startswith("set:"):
            k, v = how[4:].split("=")
            m[k] = [] if v == "[]" else v
            text = json.dumps(m)
        elif how.startswith("art:"):
            del m["artifacts"][0][how[4:]]
            text = json.dumps(m)
        else:
            text = how
        (b / "manifest.json").write_text(text)
        rel = f"work/m{i}"
        cases.append(Case(f"manifest: {name} (validate)", "manifests", edgeship("validate", str(b)), expect=(1, 2)))
        for cmd in ("check", "parity"):
            cases.append(Case(f"manifest: {name} (runner {cmd})", "manifests", [str(b / "edgeship-runner.pyz"), cmd, str(b)], expect=(1, 2), may_write=(f"{rel}/device",)))
    return cases


def runner_cases(sb: Sandbox, bundle: Path) -> List[Case]:
    """The runner's counts and times, a crafted artifact the manifest vouches for, a truncated one."""
    w = sb.root / "work"
    cases = []
    pyz = lambda b: str(b / "edgeship-runner.pyz")  # noqa: E731
    for args in (["--runs", "1000000000000"], ["--warmup", "-5"], ["--seconds", "nan"], ["--threads", "0"], ["--runs", "abc"]):
        cases.append(Case(f"runner: bench {' '.join(args)}", "crashes", [pyz(bundle), "bench", str(bundle), *args], expect=(2,)))
    crafted = copy_bundle(bundle, w / "crafted")
    retarget_tflite_tensor(bundle / "artifacts" / "model_int8.tflite", crafted / "artifacts" / "model_int8.tflite")
    rehash(crafted, "artifacts/model_int8.tflite")
    for cmd in ("check", "parity", "bench"):
        cases.append(Case(f"runner: {cmd} of a crafted .tflite the manifest vouches for", "crashes", [pyz(crafted), cmd, str(crafted)], expect=(1,), may_write=("work/crafted/device",)))
    cases.append(Case("validate: bundle with a crafted .tflite the manifest vouches for", "crashes", edgeship("validate", str(crafted)), expect=(1, 2)))
    cut = copy_bundle(bundle, w / "cut")
    t = cut / "artifacts" / "model_int8.tflite"
    t.write_bytes(t.read_bytes()[:3000])
    rehash(cut, "artifacts/model_int8.tflite")

    def no_upgrade_advice(sb: Sandbox) -> Optional[str]:
        out = sb.root / "work" / "cut-check.json"
        if out.is_file():
            d = json.loads(out.read_text())
            a = next(x for x in d["artifacts"] if x["artifact"] == "model_int8.tflite")
            if a.get("install"):
                return f"advises '{a['install']}' for a truncated file"
        return None

    cases.append(Case("runner: check of a truncated .tflite with a matching hash", "wrong answers", [pyz(cut), "check", str(cut), "--json", str(w / "cut-check.json")], expect=(1,), may_write=("work/cut-check.json",), check=no_upgrade_advice))
    return cases


def security_cases(sb: Sandbox, bundle: Path, python: str = sys.executable) -> List[Case]:
    """The security findings: path traversal and absolute paths in a manifest, a symlinked folder,
    a tampered artifact, ssh option injection, a sample that is a path."""
    w = sb.root / "work"
    cases = []
    secret = sb.root / "home" / "secret.tflite"
    shutil.copy2(bundle / "artifacts" / "model_fp32.tflite", secret)
    victim_rel = "home/.bashrc"

    def untouched(sb: Sandbox) -> Optional[str]:
        return f"{victim_rel} was written" if (sb.root / victim_rel).exists() else None

    # traversal write: artifact file ../../../home/.bashrc (relative to the bundle in work/)
    t = copy_bundle(bundle, w / "trav")
    m = json.loads((t / "manifest.json").read_text())
    m["artifacts"][0]["file"] = "../../home/.bashrc"
    m["files"]["../../home/.bashrc"] = m["files"]["artifacts/model_int8.tflite"]
    (t / "manifest.json").write_text(json.dumps(m))
    cases.append(Case("security: ../ in an artifact path (deploy local)", "security", edgeship("deploy", str(t), "--device", f"local:{python}", "-q"), expect=(1, 2), may_write=("work/trav",), check=untouched, timeout=300))
    cases.append(Case("security: ../ in an artifact path (validate)", "security", edgeship("validate", str(t)), expect=(1, 2)))
    a = copy_bundle(bundle, w / "abs")
    m = json.loads((a / "manifest.json").read_text())
    m["artifacts"][1]["file"] = str(secret)
    m["files"][str(secret)] = {"sha256": hashlib.sha256(secret.read_bytes()).hexdigest(), "size": secret.stat().st_size}
    (a / "manifest.json").write_text(json.dumps(m))
    cases.append(Case("security: absolute artifact path (validate)", "security", edgeship("validate", str(a)), expect=(1, 2)))
    cases.append(Case("security: absolute artifact path (runner check)", "security", [str(a / "edgeship-runner.pyz"), "check", str(a)], expect=(1, 2)))
    s = copy_bundle(bundle, w / "sym")
    shutil.rmtree(s / "artifacts")
    (s / "artifacts").symlink_to(sb.root / "home")
    shutil.copy2(bundle / "artifacts" / "model_int8.tflite", sb.root / "home" / "model_int8.tflite")
    cases.append(Case("security: artifacts/ a symlink out of the bundle (validate)", "security", edgeship("validate", str(s)), expect=(1, 2)))
    tam = copy_bundle(bundle, w / "tamper")
    f = tam / "artifacts" / "model_fp32.tflite"
    f.write_bytes(flip_bytes(f.read_bytes(), 7, n=2))
    cases.append(Case("security: tampered artifact (validate)", "security", edgeship("validate", str(tam)), expect=(1,)))
    cases.append(Case("security: ssh option injection in the user", "security", edgeship("device", "check", "ssh://-oProxyCommand=touch${IFS}/tmp/pwned@host"), expect=(2,)))
    cases.append(Case("security: ssh option injection in the host", "security", edgeship("device", "check", "ssh://-oProxyCommand=x"), expect=(2,)))
    evil = w / "evil"
    evil.mkdir()
    (evil / "model.py").write_text(f"open({str(sb.root / 'home' / 'pwned')!r}, 'w').write('x')\n")
    cases.append(Case("security: --sample pointing at a folder with model.py", "security", edgeship("train", "--sample", str(evil)), expect=(2,),
                      check=lambda sb: "the sample's model.py ran" if (sb.root / "home" / "pwned").exists() else None))
    cases.append(Case("security: --sample ../../x", "security", edgeship("train", "--sample", "../../x"), expect=(2,)))
    return cases


def interrupt_cases(sb: Sandbox) -> List[Case]:
    """SIGTERM and SIGINT during a real (cached sample) build: 130, no partial folder left, no temp files."""
    cases = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        cases.append(Case(
            f"interrupt: {sig.name} while timing", "interrupts",
            edgeship("build", "--out", "out", "--runs", "1000000"), expect=(130,), signal_after=("timing", sig),
            check=lambda sb: ("left " + ", ".join(p.name for p in (sb.root / "work").iterdir())) if any((sb.root / "work").glob(".out.*")) else None,
        ))
    return cases


def stale_partial_case(sb: Sandbox) -> Case:
    """A build killed with SIGKILL left .out.partial-<dead pid>-x: the next build removes it."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    parent = sb.root / "work" / "stale"
    (parent / f".out.partial-{dead.pid}-abc123").mkdir(parents=True)
    (parent / f".out.partial-{dead.pid}-abc123" / "model_int8.tflite").write_bytes(b"x")
    return Case("interrupt: stale partial of a dead (SIGKILLed) build is swept", "interrupts", edgeship("build", "-q", "--out", "stale/out", "--runs", "2"),
                expect=(0,), may_write=("work/stale",),
                check=lambda sb: "stale partial left" if any(parent.glob(".out.partial-*")) else None)


def write_zip_bomb_npz(dest: Path) -> Path:
    """An .npz whose member header claims a 10^12-element array."""
    with zipfile.ZipFile(dest, "w") as z:
        header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000, 1000000), }"
        header = header + " " * (118 - len(header)) + "\n"
        z.writestr("x.npy", b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + b"\x00" * 64)
    return dest


def disk_full_case(sb: Sandbox, size: str = "600k") -> Optional[Case]:
    """A build whose --out is on a 600 KiB filesystem (a tmpfs, so root only; None elsewhere): exit 4
    with the disk-full line, not a converter failure (3), and nothing left on that disk."""
    small = sb.root / "work" / "small"
    small.mkdir(exist_ok=True)
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(small)], capture_output=True).returncode != 0:
        return None

    def verdict(sb: Sandbox) -> Optional[str]:
        left = [p.name for p in small.iterdir()]
        subprocess.run(["umount", str(small)], capture_output=True)
        return f"left {left} on the full disk" if left else None

    return Case("disk full: build --out on a 600 KiB filesystem", "disk", edgeship("build", "-q", "--out", str(small / "out"), "--runs", "3"),
                expect=(4,), may_write=("work/small",), check=verdict)


def random_json_edit(d: object, rng: np.random.Generator) -> object:
    """Delete a random key, or replace a random value with a random JSON value (seeded)."""
    def paths(x: object, prefix: tuple = ()) -> List[tuple]:
        out = [prefix] if prefix else []
        if isinstance(x, dict):
            for k, v in x.items():
                out += paths(v, prefix + (k,))
        elif isinstance(x, list):
            for i, v in enumerate(x):
                out += paths(v, prefix + (i,))
        return out

    values = [None, True, -1, 0, 10**15, 1.5, float("nan"), "", "../../x", "/etc/passwd", [], {}, [1, "a"], {"a": None}]
    ps = paths(d)
    if not ps:
        return values[int(rng.integers(len(values)))]
    path = ps[int(rng.integers(len(ps)))]
    parent = d
    for k in path[:-1]:
        parent = parent[k]  # type: ignore[index]
    if isinstance(parent, dict) and rng.random() < 0.4:
        del parent[path[-1]]
    else:
        parent[path[-1]] = values[int(rng.integers(len(values)))]  # type: ignore[index]
    return d


def fuzz_cases(sb: Sandbox, bundle: Path, n: int = 40, seed: int = 0) -> List[Case]:
    """``n`` seeded random mutations: half damage a model file the manifest then vouches for (run by
    the runner's parity), half edit the manifest (run by the runner's check and `edgeship validate`)."""
    rng = np.random.default_rng(seed)
    arts = ["model_int8.tflite", "model_fp32.tflite", "model_int8.onnx", "model_fp32.onnx"]
    cases = []
    for i in range(n):
        b = copy_bundle(bundle, sb.root / "work" / f"f{i}")
        rel = f"work/f{i}"
        if i % 2 == 0:
            which = arts[(i // 2) % len(arts)]
            f = b / "artifacts" / which
            f.write_bytes(flip_bytes(f.read_bytes(), int(rng.integers(2**31)), int(rng.integers(1, 64))))
            rehash(b, f"artifacts/{which}")
            cases.append(Case(f"fuzz {i}: {which} with {'random bytes'} (runner parity)", "fuzz", [str(b / "edgeship-runner.pyz"), "parity", str(b), "--artifact", which], expect=(0, 1, 2), may_write=(f"{rel}/device",)))
        else:
            m = json.loads((b / "manifest.json").read_text())
            for _ in range(int(rng.integers(1, 4))):
                m = random_json_edit(m, rng)
            (b / "manifest.json").write_text(json.dumps(m))
            cases.append(Case(f"fuzz {i}: edited manifest (runner check)", "fuzz", [str(b / "edgeship-runner.pyz"), "check", str(b)], expect=(0, 1, 2, 4)))
            cases.append(Case(f"fuzz {i}: edited manifest (validate)", "fuzz", edgeship("validate", str(b)), expect=(0, 1, 2)))
    return cases
