"""A bundle from a stranger is safe to open: each finding of issue 10's security section, reproduced
and shown refused, and signed bundles round-tripped with the real OpenSSH ssh-keygen.

Paths a bundle names (manifest `file` and `files` entries) stay inside the bundle, symlinks
included; device addresses cannot smuggle ssh options; a file that differs from the manifest fails
(exit 1) everywhere; a signature proves who made the manifest and every file it lists.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest

from edgeship.runner import bundlefmt
from edgeship.runner.bundlefmt import BundleError
from tests.conftest import ROOT, run_cli


def one_line_error(r: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    assert r.returncode == code, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, r.stderr
    for n in needles:
        assert n in errors[0], errors[0]


def files_under(folder: Path) -> List[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def sha(p: Path) -> Dict[str, Any]:
    return {"sha256": hashlib.sha256(p.read_bytes()).hexdigest(), "size": p.stat().st_size}


def write_manifest(bundle: Path, manifest: Dict[str, Any]) -> None:
    (bundle / "manifest.json").write_text(json.dumps(manifest))


# --------------------------------------------------------------------------- containment (no build needed)


def small_bundle(root: Path) -> Path:
    """A folder with a manifest the loader accepts: one artifact, its bytes hashed."""
    b = root / "bundle"
    (b / "artifacts").mkdir(parents=True)
    (b / "artifacts" / "m.tflite").write_bytes(b"TFL3 not really a model")
    write_manifest(b, {
        "manifest_schema": bundlefmt.MANIFEST_SCHEMA,
        "artifacts": [{"path": "m.tflite", "file": "artifacts/m.tflite", "format": "tflite", "key": "tflite:fp32", "recipe": "fp32"}],
        "files": {"artifacts/m.tflite": sha(b / "artifacts" / "m.tflite")},
        "target": {"name": "t", "runtime": {}, "budgets": {}},
    })  # fmt: skip
    return b


def test_containment_refuses_paths_that_leave_the_folder(tmp_path: Path) -> None:
    b = small_bundle(tmp_path)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.tflite").write_bytes(b"secret")
    os.symlink(tmp_path / "outside", b / "linked")  # a symlinked folder inside the bundle, leading out
    os.symlink("artifacts", b / "alias")  # a symlink that stays inside is fine
    assert bundlefmt.contained(str(b), "artifacts/m.tflite") == str((b / "artifacts" / "m.tflite").resolve())
    assert bundlefmt.contained(str(b), "alias/m.tflite") == str((b / "artifacts" / "m.tflite").resolve())
    assert bundlefmt.contained(str(b), "new/not/yet.npz").startswith(str(b.resolve()))  # a file about to be written
    for rel, why in [
        ("../outside/secret.tflite", "'..' leads outside"),
        ("artifacts/../../outside/secret.tflite", "'..' leads outside"),
        (str(tmp_path / "outside" / "secret.tflite"), "an absolute path"),
        ("~/.ssh/authorized_keys", "an absolute path"),
        ("linked/secret.tflite", "a symlink"),
        ("linked", "a symlink"),
        ("", "not a relative path"),
        (None, "not a relative path"),
        (["artifacts"], "not a relative path"),
    ]:
        with pytest.raises(BundleError, match=why) as e:
            bundlefmt.contained(str(b), rel, "file")
        assert e.value.code == 2
    for name in ("../x", "a/b", "..", "", 3):
        with pytest.raises(BundleError, match="plain file name"):
            bundlefmt.plain_name(name, "artifact path")


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda m: [m], "expected a JSON object, found a JSON list"),
        (lambda m: {k: v for k, v in m.items() if k != "artifacts"}, 'missing "artifacts"'),
        (lambda m: {k: v for k, v in m.items() if k != "files"}, 'missing "files"'),
        (lambda m: {**m, "artifacts": {"a": 1}}, '"artifacts" must be an array'),
        (lambda m: {**m, "artifacts": [1]}, "artifacts[0] must be an object"),
        (lambda m: {**m, "artifacts": [{**m["artifacts"][0], "file": 7}]}, '"file" must be a string, not a whole number'),
        (lambda m: {**m, "artifacts": [{**m["artifacts"][0], "format": "pickle"}]}, "format 'pickle' is not one of"),
        (lambda m: {**m, "artifacts": [{**m["artifacts"][0], "path": "../../x"}]}, "must be a plain file name"),
        (lambda m: {**m, "artifacts": [{**m["artifacts"][0], "required": "yes"}]}, '"required" must be true or false'),
        (lambda m: {**m, "artifacts": [{k: v for k, v in m["artifacts"][0].items() if k != "key"}]}, 'artifacts[0]: missing "key"'),
        (lambda m: {**m, "files": {"artifacts/m.tflite": {"sha256": "x", "size": 1}}}, "sha256 must be 64 hex digits"),
        (lambda m: {**m, "files": {"artifacts/m.tflite": {"sha256": "0" * 64, "size": True}}}, '"size" must be a whole number, not true or false'),
        (lambda m: {**m, "files": {"../../etc/passwd": {"sha256": "0" * 64, "size": 1}}}, "'..' leads outside"),
        (lambda m: {**m, "files": {"/etc/passwd": {"sha256": "0" * 64, "size": 1}}}, "an absolute path"),
        (lambda m: {**m, "target": []}, '"target" must be an object'),
        (lambda m: {**m, "target": {"runtime": {"threads": "8"}}}, "target.runtime.threads must be a whole number"),
        (lambda m: {**m, "manifest_schema": "edgeship.manifest/99"}, "made by another edgeship version"),
    ],
)
def test_manifest_loader_names_the_field(tmp_path: Path, mutate: Any, field: str) -> None:
    """One loader (host, runner, deploy, validate): a malformed manifest is exit 2 naming the field."""
    b = small_bundle(tmp_path)
    write_manifest(b, mutate(json.loads((b / "manifest.json").read_text())))
    with pytest.raises(BundleError, match=field.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")) as e:
        bundlefmt.load_manifest(str(b))
    assert e.value.code == 2


def test_malformed_manifests_are_one_line_in_every_command(tmp_path: Path) -> None:
    b = small_bundle(tmp_path)
    for text, needle in (("{not json", "is not valid JSON"), ("[1, 2]", "found a JSON list"), ('{"files": {}}', 'missing "artifacts"')):
        (b / "manifest.json").write_text(text)
        one_line_error(run_cli("validate", str(b)), 2, needle)
        one_line_error(run_cli("deploy", str(b), "--device", f"local:{sys.executable}"), 2, needle)
        runner = subprocess.run([sys.executable, "-m", "edgeship.runner", "parity", str(b)], capture_output=True, text=True, cwd=ROOT)
        one_line_error(runner, 2, needle)


# --------------------------------------------------------------------------- ssh addresses, ~, --sample


@pytest.mark.parametrize(
    "url, what",
    [
        ("ssh://-oProxyCommand=touch${IFS}PWNED@host", "refusing device user '-oProxyCommand"),
        ("ssh://pi@-oProxyCommand=x", "refusing device host '-oproxycommand"),
        ("ssh://pi@host?python=-c", "refusing remote Python '-c'"),
    ],
)
def test_ssh_options_cannot_be_injected(tmp_path: Path, url: str, what: str) -> None:
    """Found: a user part starting with '-' landed before '--' on ssh's command line (ProxyCommand runs
    a command here). Refused before ssh is called; nothing runs."""
    b = small_bundle(tmp_path)
    r = run_cli("deploy", str(b), "--device", url, cwd=tmp_path)
    one_line_error(r, 2, what)
    assert not (tmp_path / "PWNED").exists()


def test_ssh_command_line_keeps_user_and_host_out_of_option_parsing() -> None:
    from edgeship.devices.ssh import SSHDevice

    d = SSHDevice.from_url("ssh://pi@raspberrypi.local:2222")
    opts = d._options("-p")
    assert opts[opts.index("-l") + 1] == "pi" and opts[opts.index("-p") + 1] == "2222"
    assert d._remote("/tmp/x") == "raspberrypi.local:/tmp/x"  # scp: the user goes as -o User=, not user@
    assert "User=pi" in d._options("-P")
    d.close()


def test_tilde_in_a_remote_python_is_expanded_by_the_devices_shell(tmp_path: Path) -> None:
    """ssh://pi@host?python=~/env/bin/python: the device's shell (here a real sh with HOME set) expands ~."""
    from edgeship.devices.ssh import remote_command

    env_bin = tmp_path / "home" / "my env" / "bin"
    env_bin.mkdir(parents=True)
    os.symlink(sys.executable, env_bin / "python")
    cmd = remote_command(["~/my env/bin/python", "-c", "import sys; print(sys.argv[1])", "~/not-expanded; rm -rf /"])
    r = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, env={"HOME": str(tmp_path / "home"), "PATH": os.environ["PATH"]})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "~/not-expanded; rm -rf /"  # only the program's ~ is expanded, arguments stay quoted


def test_sample_must_be_a_name(tmp_path: Path) -> None:
    """Found: --sample PATH imported and ran any model.py it was pointed at."""
    from edgeship.resources import sample_models_dir

    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "model.py").write_text(f"open({str(tmp_path / 'RAN')!r}, 'w').write('x')\n")
    rel = os.path.relpath(evil, sample_models_dir())
    for name in (rel, str(evil)):
        one_line_error(run_cli("train", "--sample", name), 2, "unknown sample model")
    assert not (tmp_path / "RAN").exists()


# --------------------------------------------------------------------------- with a real bundle


@pytest.fixture()
def bundle(arm64_build: Any, tmp_path: Path) -> Path:
    dest = tmp_path / "dl" / "digits-arm64"
    shutil.copytree(arm64_build.bundle, dest)
    return dest


@pytest.mark.slow
def test_crafted_bundle_cannot_write_outside_through_deploy(bundle: Path, tmp_path: Path) -> None:
    """Found: deploy joined staging / a["file"], so '../' in a manifest wrote a file of the author's
    choosing (authorized_keys, .bashrc) before anything was uploaded. The payload ships beside the
    bundle (same archive); the staging folder is deeper, so the write would land in tmp/victim."""
    payload = bundle.parent.parent / "victim" / "authorized_keys"  # what the old code read
    payload.parent.mkdir(parents=True)
    payload.write_text("ssh-ed25519 AAAA attacker\n")
    rel = "../../victim/authorized_keys"
    m = json.loads((bundle / "manifest.json").read_text())
    m["artifacts"][0]["file"] = rel
    m["files"][rel] = sha(payload)
    write_manifest(bundle, m)
    tmp = tmp_path / "tmp" / "deep"
    tmp.mkdir(parents=True)
    before = files_under(tmp_path)
    r = run_cli("deploy", str(bundle), "--device", f"local:{sys.executable}", env={"TMPDIR": str(tmp)})
    one_line_error(r, 2, "refusing", "'..' leads outside")
    assert files_under(tmp_path) == before, "nothing written anywhere, no temp folder left"
    assert not (tmp_path / "tmp" / "victim").exists()


@pytest.mark.slow
def test_a_bundle_cannot_make_the_runner_load_a_library(bundle: Path, tmp_path: Path) -> None:
    """A TFLite delegate named by path in the manifest would be dlopen'ed (its constructors run) by
    `check` before anything else: a bundle may name the built-in delegates only."""
    marker = tmp_path / "loaded"
    lib = tmp_path / "evil.c"
    lib.write_text(f'#include <stdio.h>\n__attribute__((constructor)) static void run(void) {{ fclose(fopen("{marker}", "w")); }}\n')
    if subprocess.run(["cc", "-shared", "-fPIC", "-o", str(tmp_path / "libevil.so"), str(lib)], capture_output=True).returncode != 0:
        pytest.skip("no C compiler to build the library")
    m = json.loads((bundle / "manifest.json").read_text())
    for name in (str(tmp_path / "libevil.so"), "../libevil.so"):
        m["target"]["runtime"]["tflite_delegates"] = [name]
        write_manifest(bundle, m)
        for cmd in ("check", "parity", "bench"):
            r = subprocess.run([sys.executable, str(bundle / "edgeship-runner.pyz"), cmd, str(bundle)], capture_output=True, text=True)
            one_line_error(r, 2, "never a library to load")
        one_line_error(run_cli("validate", str(bundle)), 2, "never a library to load")
        one_line_error(run_cli("deploy", str(bundle), "--device", f"local:{sys.executable}"), 2, "never a library to load")
    assert not marker.exists(), "the library's code ran"


def test_absolute_and_escaping_artifact_paths_are_never_read_or_run(bundle: Path, tmp_path: Path) -> None:
    """Found: an artifact `file` of ../../x/secret.tflite or an absolute path made validate, the
    runner and deploy open, run and copy a file outside the bundle, and exit 0."""
    outside = tmp_path / "x" / "secret.tflite"
    outside.parent.mkdir()
    shutil.copy(bundle / "artifacts" / "model_fp32.tflite", outside)
    m0 = json.loads((bundle / "manifest.json").read_text())
    for rel, why in ((str(outside), "an absolute path"), ("../../x/secret.tflite", "'..' leads outside")):
        m = json.loads(json.dumps(m0))
        m["artifacts"][1]["file"] = rel
        m["files"][rel] = sha(outside)
        write_manifest(bundle, m)
        one_line_error(run_cli("validate", str(bundle)), 2, why)
        one_line_error(run_cli("deploy", str(bundle), "--device", f"local:{sys.executable}"), 2, why)
        runner = subprocess.run([sys.executable, str(bundle / "edgeship-runner.pyz"), "parity", str(bundle), "--out", str(tmp_path / "o")],
                                capture_output=True, text=True)  # fmt: skip
        one_line_error(runner, 2, why)
        assert not (tmp_path / "o").exists()
    # `files` entries too: validate no longer stats or hashes paths elsewhere
    m = json.loads(json.dumps(m0))
    m["files"]["../../../etc/passwd"] = {"sha256": "0" * 64, "size": 1}
    write_manifest(bundle, m)
    one_line_error(run_cli("validate", str(bundle)), 2, "'..' leads outside")


@pytest.mark.slow
def test_symlinked_folder_inside_the_bundle_is_refused(bundle: Path, tmp_path: Path) -> None:
    """artifacts/ replaced by a symlink to a folder elsewhere holding files with the listed hashes."""
    elsewhere = tmp_path / "elsewhere"
    shutil.move(str(bundle / "artifacts"), elsewhere)
    os.symlink(elsewhere, bundle / "artifacts")
    for r in (
        run_cli("validate", str(bundle)),
        run_cli("deploy", str(bundle), "--device", f"local:{sys.executable}"),
        subprocess.run([sys.executable, str(bundle / "edgeship-runner.pyz"), "check", str(bundle)], capture_output=True, text=True),
    ):
        one_line_error(r, 2, "a symlink in", "leads it outside")
    # device outputs are never written through a symlinked devices/ folder either
    os.unlink(bundle / "artifacts")
    shutil.move(str(elsewhere), bundle / "artifacts")
    (tmp_path / "victim").mkdir()
    os.symlink(tmp_path / "victim", bundle / "devices")
    from edgeship.devices.record import record_devices
    from edgeship.errors import UsageError

    out = Path(__import__("tempfile").mkdtemp(prefix="edgeship-dev-")) / "local"
    out.mkdir()
    (out / "outputs_x.npz").write_bytes(b"x")
    with pytest.raises(UsageError, match="leads it outside"):
        record_devices(bundle, [{"device": "local", "_outputs": str(out), "artifacts": [], "passed": True, "failures": []}])
    assert list((tmp_path / "victim").iterdir()) == [] and not out.parent.exists()


@pytest.mark.slow
def test_a_tampered_artifact_fails_everywhere(bundle: Path, tmp_path: Path) -> None:
    """Found: validate said only 'note: sha256 mismatch', ran the changed file and passed."""
    art = bundle / "artifacts" / "model_fp32.onnx"
    data = bytearray(art.read_bytes())
    data[-5] ^= 0x01  # one bit, in a weight: the model still runs
    art.write_bytes(bytes(data))
    r = run_cli("validate", str(bundle))
    one_line_error(r, 1)
    assert "artifacts/model_fp32.onnx: sha256 mismatch (modified or truncated) since the build" in r.stderr
    runner = subprocess.run([sys.executable, str(bundle / "edgeship-runner.pyz"), "bench", str(bundle), "--runs", "2", "--artifact", "onnx:fp32"],
                            capture_output=True, text=True)  # fmt: skip
    one_line_error(runner, 1, "refusing artifacts/model_fp32.onnx")
    one_line_error(run_cli("deploy", str(bundle), "--device", f"local:{sys.executable}"), 1, "no longer match")


# --------------------------------------------------------------------------- signatures


def keypair(folder: Path, name: str) -> Path:
    key = folder / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)], check=True)
    return key


def allowed_signers(folder: Path, principal: str, key: Path) -> Path:
    f = folder / f"allowed_signers_{principal}"
    kind, blob = key.with_suffix(".pub").read_text().split()[:2]
    f.write_text(f"{principal} {kind} {blob}\n")
    return f


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    if not shutil.which("ssh-keygen"):
        from tests.device_fixtures import ensure_openssh

        ensure_openssh()
    d = tmp_path_factory.mktemp("keys")
    ci, stranger = keypair(d, "ci"), keypair(d, "stranger")
    return {"ci": ci, "stranger": stranger, "signers": allowed_signers(d, "ci@example.com", ci)}


@pytest.mark.slow
def test_signed_bundle_round_trip(bundle: Path, keys: Dict[str, Path], tmp_path: Path) -> None:
    signers = str(keys["signers"])
    pyz = [sys.executable, str(bundle / "edgeship-runner.pyz")]
    # unsigned + required: refused everywhere, nothing runs
    one_line_error(run_cli("validate", str(bundle), "--require-signature", "--allowed-signers", signers), 1, "is not signed")
    one_line_error(run_cli("deploy", str(bundle), "--device", f"local:{sys.executable}", "--require-signature", "--allowed-signers", signers), 1, "is not signed")
    r = subprocess.run([*pyz, "check", str(bundle), "--require-signature", "--allowed-signers", signers], capture_output=True, text=True)
    one_line_error(r, 1, "is not signed")
    r = subprocess.run([*pyz, "serve", str(bundle), "--require-signature", "--allowed-signers", signers], capture_output=True, text=True)
    one_line_error(r, 1, "is not signed")  # refused before anything listens
    # sign, verify
    r = run_cli("sign", str(bundle), "--key", str(keys["ci"]))
    assert r.returncode == 0 and (bundle / "manifest.json.sig").is_file(), r.stderr
    assert "BEGIN SSH SIGNATURE" in (bundle / "manifest.json.sig").read_text()
    r = run_cli("validate", str(bundle), "--require-signature", "--allowed-signers", signers, "--artifact", "model_int8.tflite")
    assert r.returncode == 0 and "note: signed by ci@example.com" in r.stderr, r.stderr
    r = subprocess.run([*pyz, "parity", str(bundle), "--out", str(tmp_path / "o"), "--artifact", "onnx:fp32", "--require-signature", "--allowed-signers", signers],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    # the signature is OpenSSH's own: ssh-keygen -Y verify accepts it by hand, as the README says
    assert bundlefmt.verify_signature(str(bundle), bundlefmt.load_manifest(str(bundle)), signers) == "ci@example.com"
    # an unknown signer: a stranger's signature over the very same manifest
    stranger = tmp_path / "by-stranger"
    shutil.copytree(bundle, stranger)
    assert run_cli("sign", str(stranger), "--key", str(keys["stranger"])).returncode == 0
    one_line_error(run_cli("validate", str(stranger), "--allowed-signers", signers), 1, "not in")
    # a changed byte in an artifact: hashes no longer match the signed manifest
    changed = tmp_path / "changed"
    shutil.copytree(bundle, changed)
    art = changed / "artifacts" / "model_int8.tflite"
    data = bytearray(art.read_bytes())
    data[len(data) // 2] ^= 0xFF
    art.write_bytes(bytes(data))
    one_line_error(run_cli("validate", str(changed), "--require-signature", "--allowed-signers", signers), 1, "artifacts/model_int8.tflite", "not as signed")
    # ... and the manifest re-hashed to match (what an attacker would do): the signature breaks
    m = json.loads((changed / "manifest.json").read_text())
    m["files"]["artifacts/model_int8.tflite"] = sha(art)
    write_manifest(changed, m)
    one_line_error(run_cli("validate", str(changed), "--require-signature", "--allowed-signers", signers), 1, "signature does not match")
    r = subprocess.run([sys.executable, str(changed / "edgeship-runner.pyz"), "bench", str(changed), "--require-signature", "--allowed-signers", signers],
                       capture_output=True, text=True)  # fmt: skip
    one_line_error(r, 1, "signature does not match")
    # a loosened budget in a signed manifest is a changed manifest too
    loose = tmp_path / "loose"
    shutil.copytree(bundle, loose)
    m = json.loads((loose / "manifest.json").read_text())
    m["target"]["budgets"]["int8"]["max_abs"] = 1e9
    write_manifest(loose, m)
    one_line_error(run_cli("deploy", str(loose), "--device", f"local:{sys.executable}", "--allowed-signers", signers), 1, "signature does not match")


@pytest.mark.slow
def test_build_signs_and_deploy_keeps_the_signature_valid(sample: Any, keys: Dict[str, Path], device_venvs: Dict[str, Path], tmp_path: Path) -> None:
    """build --sign-key; a deploy then adds device sections (reports, device outputs): what the signature
    covers (the build's manifest, artifacts, inputs, runner) is unchanged, so it still verifies."""
    out = tmp_path / "signed"
    r = run_cli("build", "--out", str(out), "--runs", "3", "--quiet", "--sign-key", str(keys["ci"]))
    assert r.returncode == 0, r.stderr[-2000:]
    assert (out / "manifest.json.sig").is_file()
    signers = str(keys["signers"])
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    r = run_cli("deploy", str(out), "--device", f"local:{device_venvs['np2-litert-ort']}", "--artifact", "tflite:int8", "--runs", "3",
                "--require-signature", "--allowed-signers", signers, env={"TMPDIR": str(tmp)})  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert "signature: ci@example.com" in r.stderr
    assert [p.name for p in tmp.glob("edgeship-*")] == [], "no edgeship-dev-*, -stage-, -results- folders left"
    assert (out / "devices").is_dir() and json.loads((out / "report.json").read_text())["devices"]
    assert run_cli("validate", str(out), "--require-signature", "--allowed-signers", signers, "--artifact", "model_int8.tflite").returncode == 0


@pytest.mark.slow
def test_a_failed_deploy_leaves_no_temp_folders_and_no_unlisted_outputs(bundle: Path, device_venvs: Dict[str, Path], tmp_path: Path) -> None:
    """Found: deploy failures leaked edgeship-dev-* folders, and a deploy failing while recording
    (a full disk) left device outputs in the bundle that no manifest or report mentioned."""
    from edgeship.devices import deploy as deploy_mod
    from edgeship.devices.deploy import DeployOptions
    from edgeship.devices.local import LocalDevice
    from edgeship.devices.record import record_devices

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    # 1. a device that fails: its section carries the error, nothing stays in TMPDIR
    r = run_cli("deploy", str(bundle), "--device", f"local:{tmp_path / 'no-python'}", env={"TMPDIR": str(tmp)})
    assert r.returncode == 4 and list(tmp.glob("edgeship-*")) == [], r.stderr
    # 2. recording fails on a full disk (a real ENOSPC, from a 1 MiB tmpfs when we may mount one)
    before = {p: p.read_bytes() for p in bundle.rglob("*") if p.is_file()}
    sections = deploy_mod.deploy(bundle, [LocalDevice(str(device_venvs["np2-litert-ort"]))], DeployOptions(artifacts=["tflite:int8"], runs=2))
    assert sections[0]["error"] is None and Path(sections[0]["_outputs"]).is_dir()
    small = tmp_path / "small"
    small.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(small)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs to fill (needs root)")
    try:
        full = small / "digits-arm64"
        shutil.copytree(bundle, full, ignore=shutil.ignore_patterns("*.onnx", "model_fp32.tflite", "calibration.npz", "host_*"))
        with open(small / "filler", "wb", buffering=0) as f:  # leave the bundle almost no room
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError:
                pass
        listed = {p: p.read_bytes() for p in full.rglob("*") if p.is_file()}
        with pytest.raises(OSError):
            record_devices(full, sections)
        assert {p: p.read_bytes() for p in full.rglob("*") if p.is_file()} == listed, "the bundle is as it was"
        assert not (full / "devices").exists() and not list(full.glob(".record-*"))
        assert not Path(sections[0]["_outputs"]).parent.exists(), "the temporary outputs are gone too"
    finally:
        subprocess.run(["umount", str(small)], capture_output=True)
    assert {p: p.read_bytes() for p in bundle.rglob("*") if p.is_file()} == before


def test_a_profile_cannot_extend_a_file_outside_its_folder(tmp_path: Path) -> None:
    """`extends` names a profile beside the file (or a built-in): never an absolute path or one through '..'."""
    from edgeship.errors import UsageError
    from edgeship.targets import load_target

    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "base.toml").write_text('extends = "arm64"\n')
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "base.toml").write_text('extends = "arm64"\n')
    for ref, why in (("../other/base.toml", "'..' leads outside"), (str(tmp_path / "other" / "base.toml"), "an absolute path")):
        p = tmp_path / "mine" / "p.toml"
        p.write_text(f'extends = "{ref}"\nname = "p"\n')
        with pytest.raises(UsageError, match=why):
            load_target(str(p))
    p.write_text('extends = "base.toml"\nname = "p"\n')
    assert load_target(str(p)).name == "p"
