"""The bundle's layout, its manifest and its signature, read one way by everything that reads a bundle.

Stdlib only: the runner ships this file inside every bundle, and the host (``edgeship.bundle``,
``validate``, ``deploy``) imports it from here, so the runner on a board and the host refuse exactly
the same bundles. A bundle comes from someone else: every path it names is resolved against the
bundle folder (symlinks included) and refused when it leaves it, before anything is read, written
or run.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from typing import Any, Dict, Iterable, List, Optional, Tuple

# --------------------------------------------------------------------------- layout

MANIFEST = "manifest.json"
SIGNATURE = "manifest.json.sig"  # ssh-keygen -Y sign over signed_payload(manifest)
RUNNER_FILE = "edgeship-runner.pyz"
ARTIFACTS_DIR = "artifacts"
PARITY_INPUTS = "parity/inputs.npz"
PARITY_REFERENCE = "parity/reference.npz"
PARITY_CALIBRATION = "parity/calibration.npz"
DEVICES_DIR = "devices"
# Files `deploy` rewrites after the build (device sections): outside what a signature covers.
REPORT_FILES = ("report.md", "report.json", "junit.xml", "report.html")

MANIFEST_SCHEMA = "edgeship.manifest/1"  # the "manifest_schema" key; absent in bundles older than it
SIGN_NAMESPACE = "edgeship-bundle"  # ssh-keygen -n: a signature made for anything else never verifies here
FORMATS = ("tflite", "onnx")
BUILTIN_DELEGATES = ("gpu", "edgetpu", "hexagon")  # runners.TFLITE_DELEGATE_LIBRARIES: names, not paths

EXIT_FAILED, EXIT_USAGE = 1, 2
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class BundleError(Exception):
    """A bundle refused: ``code`` is 2 (malformed, or a path leaving the bundle) or 1 (files or
    signature do not match). Host and runner turn it into their own one-line error."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------- containment


def contained(folder: str, rel: Any, what: str = "path") -> str:
    """The real path of ``rel`` inside ``folder``; refuses an absolute path, a ``..`` or a symlink
    that leads out of ``folder`` (exit 2). ``rel`` need not exist (a file about to be written)."""
    if not isinstance(rel, str) or not rel or "\x00" in rel:
        raise BundleError(f"{what} {rel!r} is not a relative path inside {folder}")
    if os.path.isabs(rel) or rel.startswith("~") or re.match(r"^[A-Za-z]:", rel):
        raise BundleError(f"refusing {what} {rel!r}: an absolute path, outside {folder} (a bundle names its files relative to itself)")
    if ".." in rel.replace("\\", "/").split("/"):
        raise BundleError(f"refusing {what} {rel!r}: '..' leads outside {folder}")
    root = os.path.realpath(folder)
    full = os.path.realpath(os.path.join(root, rel))
    if full == root or os.path.commonpath([root, full]) != root:
        raise BundleError(f"refusing {what} {rel!r}: a symlink in {folder} leads it outside (to {full})")
    return full


def plain_name(name: Any, what: str) -> str:
    """A single file name (no folder part): names that are joined into paths (``outputs_<name>.npz``)."""
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        raise BundleError(f"refusing {what} {name!r}: must be a plain file name, without folders")
    return name


# --------------------------------------------------------------------------- manifest


def _field(obj: Dict[str, Any], key: str, types: Any, where: str, required: bool = True) -> Any:
    if key not in obj:
        if required:
            raise BundleError(f"{where}: missing \"{key}\"")
        return None
    value = obj[key]
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in _tuple(types)):
        want = " or ".join(_KINDS.get(t.__name__, t.__name__) for t in _tuple(types))
        raise BundleError(f"{where}: \"{key}\" must be {want}, not {_KINDS.get(type(value).__name__, type(value).__name__)}")
    return value


_KINDS = {"dict": "an object", "list": "an array", "str": "a string", "int": "a whole number", "bool": "true or false", "float": "a number", "NoneType": "null"}


def _tuple(types: Any) -> Tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def check_manifest(manifest: Any, folder: str, name: str = MANIFEST) -> Dict[str, Any]:
    """``manifest`` itself when it is one this code can use safely; else BundleError naming the field."""
    where = f"{os.path.join(folder, name)}"
    if not isinstance(manifest, dict):
        raise BundleError(f"{where}: expected a JSON object, found a JSON {type(manifest).__name__} (rebuild the bundle with 'edgeship build')")
    schema = manifest.get("manifest_schema", MANIFEST_SCHEMA)
    if schema != MANIFEST_SCHEMA:
        raise BundleError(f"{where}: manifest_schema {schema!r} is not {MANIFEST_SCHEMA!r} (made by another edgeship version; use that one, or rebuild)")
    files = _field(manifest, "files", dict, where)
    for rel, meta in files.items():
        w = f"{where}: files[{rel!r}]"
        contained(folder, rel, "file")
        if not isinstance(meta, dict):
            raise BundleError(f"{w} must be an object with sha256 and size")
        sha = _field(meta, "sha256", str, w)
        size = _field(meta, "size", int, w)
        if not _SHA256.match(sha) or size < 0:
            raise BundleError(f"{w}: sha256 must be 64 hex digits and size a byte count")
    arts = _field(manifest, "artifacts", list, where)
    for i, a in enumerate(arts):
        w = f"{where}: artifacts[{i}]"
        if not isinstance(a, dict):
            raise BundleError(f"{w} must be an object")
        plain_name(_field(a, "path", str, w), f"{w}.path")
        contained(folder, _field(a, "file", str, w), f"{w}.file")
        if _field(a, "format", str, w) not in FORMATS:
            raise BundleError(f"{w}: format {a['format']!r} is not one of {', '.join(FORMATS)}")
        _field(a, "key", str, w)
        _field(a, "recipe", str, w)
        _field(a, "required", bool, w, required=False)
        _field(a, "inputs", list, w, required=False)
    target = _field(manifest, "target", dict, where)
    rt = _field(target, "runtime", dict, f"{where}: target", required=False) or {}
    for key in ("onnx_providers", "tflite_delegates"):
        if rt.get(key) is not None and not (isinstance(rt[key], list) and all(isinstance(x, str) for x in rt[key])):
            raise BundleError(f"{where}: target.runtime.{key} must be a list of names")
    for d in rt.get("tflite_delegates") or []:  # loading a library runs its code: a bundle names no library
        if d not in BUILTIN_DELEGATES:
            raise BundleError(
                f"{where}: target.runtime.tflite_delegates names {d!r}: a bundle may only name the built-in delegates "
                f"({', '.join(BUILTIN_DELEGATES)}), never a library to load (that would run its code on this machine)"
            )
    for key in ("threads", "runs", "warmup"):
        if rt.get(key) is not None and (not isinstance(rt[key], int) or isinstance(rt[key], bool) or rt[key] < 0):
            raise BundleError(f"{where}: target.runtime.{key} must be a whole number >= 0")
    budgets = _field(target, "budgets", dict, f"{where}: target", required=False) or {}
    if not all(isinstance(v, dict) for v in budgets.values()):
        raise BundleError(f"{where}: target.budgets must map recipes to objects")
    for key in ("preprocessing", "parity_inputs", "model"):  # null: a build from tensors has no preprocessing
        _field(manifest, key, (dict, type(None)), where, required=False)
    _field(manifest, "class_names", (list, type(None)), where, required=False)
    return manifest


def load_manifest(folder: str) -> Dict[str, Any]:
    """The bundle's manifest, checked (shape, types, every path inside ``folder``); BundleError (exit 2) otherwise."""
    path = contained(folder, MANIFEST, "manifest")
    if not os.path.isfile(path):
        raise BundleError(f"{folder} is not an edgeship bundle: no {MANIFEST} (pass the bundle folder, or build one with 'edgeship build')")
    try:
        with open(path, "rb") as f:
            manifest = json.loads(f.read().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise BundleError(f"{path} is not valid JSON ({e}); the bundle is damaged: copy or rebuild it") from None
    except (OSError, RecursionError) as e:
        raise BundleError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    return check_manifest(manifest, folder)


def sha256_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_problem(folder: str, manifest: Dict[str, Any], rel: str) -> Optional[str]:
    """Why ``rel`` cannot be trusted (not listed, missing, size or sha256 differs), or None."""
    meta = manifest["files"].get(rel)
    if meta is None:
        return "not listed in the manifest's files"
    path = contained(folder, rel, "file")
    if not os.path.isfile(path):
        return "missing"
    size = os.path.getsize(path)
    if size != meta["size"]:
        return f"{size} bytes, the manifest says {meta['size']} (truncated or modified)"
    if sha256_of(path) != meta["sha256"]:
        return "sha256 does not match the manifest (modified or corrupted)"
    return None


def verified(folder: str, manifest: Dict[str, Any], rel: str) -> str:
    """The real path of a bundle file whose bytes match the manifest; BundleError (exit 1) otherwise."""
    problem = file_problem(folder, manifest, rel)
    if problem:
        raise BundleError(f"refusing {rel}: {problem}; copy or rebuild the bundle", EXIT_FAILED)
    return contained(folder, rel, "file")


def problems(folder: str, manifest: Dict[str, Any], rels: Optional[Iterable[str]] = None) -> Dict[str, str]:
    """{rel: why} for every listed (or each given) file that does not match the manifest."""
    out = {}
    for rel in manifest["files"] if rels is None else rels:
        why = file_problem(folder, manifest, rel)
        if why:
            out[rel] = why
    return out


# --------------------------------------------------------------------------- signatures


def signed_payload(manifest: Dict[str, Any]) -> bytes:
    """What a bundle signature covers: the manifest as built (every artifact, input, the runner and
    their sha256), canonical JSON. Deploy's additions (device sections, re-rendered reports,
    device outputs) are left out, so deploying a signed bundle keeps its signature valid."""
    deployed = (DEVICES_DIR + "/",)
    files = {k: v for k, v in manifest.get("files", {}).items() if k not in REPORT_FILES and not k.startswith(deployed)}
    body = {k: v for k, v in manifest.items() if k not in ("files", "devices")}
    body["files"] = files
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=True).encode("ascii")


def _keygen(args: List[str], data: bytes, what: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["ssh-keygen", *args], input=data, capture_output=True, timeout=60)
    except FileNotFoundError:
        raise BundleError(f"{what} needs ssh-keygen (OpenSSH 8.2+): install the OpenSSH client (sudo apt install openssh-client)", 4) from None
    except subprocess.TimeoutExpired:
        raise BundleError(f"{what}: ssh-keygen did not answer within 60 s (a key with a passphrase needs ssh-agent)", 4) from None


def _last_line(b: bytes) -> str:
    lines = [ln.strip() for ln in b.decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-1] if lines else "(no output)"


def sign(folder: str, key: str) -> str:
    """Sign the bundle's manifest with an OpenSSH private key (``ssh-keygen -Y sign``); the signature file."""
    manifest = load_manifest(folder)
    key = os.path.expanduser(key)
    if not os.path.isfile(key):
        raise BundleError(f"signing key {key} not found (an OpenSSH private key, e.g. ~/.ssh/id_ed25519; make one with ssh-keygen -t ed25519)")
    r = _keygen(["-Y", "sign", "-q", "-f", key, "-n", SIGN_NAMESPACE], signed_payload(manifest), "signing")
    if r.returncode != 0 or b"BEGIN SSH SIGNATURE" not in r.stdout:
        raise BundleError(f"signing with {key} failed: {_last_line(r.stderr)}")
    dest = contained(folder, SIGNATURE, "signature")
    tmp = dest + f".tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(r.stdout)
    os.replace(tmp, dest)
    return dest


def verify_signature(folder: str, manifest: Dict[str, Any], allowed_signers: str) -> str:
    """The principal whose key signed this manifest, per ``allowed_signers`` (ssh-keygen's format,
    ``ALLOWED SIGNERS`` in its man page); BundleError exit 1 when unsigned or not validly signed."""
    if not allowed_signers or not os.path.isfile(os.path.expanduser(allowed_signers)):
        raise BundleError(f"allowed signers file {allowed_signers!r} not found (lines of: PRINCIPAL KEYTYPE KEY, e.g. 'ci@example.com ssh-ed25519 AAAA...')")
    signers = os.path.expanduser(allowed_signers)
    sig = contained(folder, SIGNATURE, "signature")
    if not os.path.isfile(sig):
        raise BundleError(f"{folder} is not signed (no {SIGNATURE}) and a signature is required: sign it with 'edgeship sign {folder} --key KEY'", EXIT_FAILED)
    r = _keygen(["-Y", "find-principals", "-s", sig, "-f", signers], b"", "verifying the signature")
    principals = [p for p in r.stdout.decode("utf-8", "replace").split() if p]
    if r.returncode != 0 or not principals:
        raise BundleError(f"{folder}: the signature's key is not in {allowed_signers}: refusing the bundle (signed by someone you do not trust, or damaged)", EXIT_FAILED)
    payload = signed_payload(manifest)
    for principal in principals:
        r = _keygen(["-Y", "verify", "-f", signers, "-I", principal, "-n", SIGN_NAMESPACE, "-s", sig], payload, "verifying the signature")
        if r.returncode == 0:
            return principal
    raise BundleError(
        f"{folder}: the signature does not match the manifest (changed after signing): refusing the bundle [{_last_line(r.stderr or r.stdout)}]",
        EXIT_FAILED,
    )


def verify_bundle(folder: str, manifest: Dict[str, Any], allowed_signers: str, rels: Optional[Iterable[str]] = None) -> str:
    """Signature valid AND the files (all, or ``rels``) match the signed hashes: the bundle is as its signer made it."""
    who = verify_signature(folder, manifest, allowed_signers)
    bad = problems(folder, manifest, rels)
    if bad:
        raise BundleError("; ".join(f"{k}: {v}" for k, v in bad.items()) + f" (the manifest is signed by {who}, these files are not as signed)", EXIT_FAILED)
    return who
