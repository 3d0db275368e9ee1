"""An emulated Raspberry Pi: Debian 12's arm64 Python 3.11 under qemu-user, with the arm64 profile's runtimes.

`edgeship device emulate arm64` prepares it once in the edgeship cache; `--device qemu-arm64[:CPU][?numpy=1|2]`
then deploys to it through the same flow as an SSH board. The aarch64 wheels run their own kernels
(NEON/XNNPACK, MLAS on Arm), so parity there checks the Arm numerics and the bundle's install story;
the emulator's timings are not a Pi's (the runner reports them as not measured).

What is put together, and why this way:
  root/    Debian bookworm's arm64 python3.11 and the shared libraries it needs, unpacked from .debs
           that apt fetched through a private apt root (its own sources, lists and cache, arm64 only):
           no chroot, no change to the host's dpkg, signatures checked by apt.
  site/    the generation's wheels for aarch64: pip picks them among the manylinux tags a glibc 2.36
           aarch64 pip accepts (numpy 2.2.6 manylinux_2_17, ai-edge-litert 2.3.0 manylinux_2_27,
           onnxruntime 1.31.1 manylinux_2_28, tflite-runtime 2.14.0 manylinux_2_34).
  cpu-*/   per CPU model: a sysroot of symlinks into root/ plus an Arm /proc/cpuinfo (qemu's -L
           prefix redirects that path; without it onnxruntime's cpuinfo reads the host's x86 file
           and crashes) and the `python3` wrapper that pins qemu's -cpu. qemu's default `-cpu max`
           gives wrong int8 TFLite results, so the CPU is always the profile device's.
Each folder is built under a temporary name and renamed into place when complete (venvs.build_in_place).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional
from urllib.parse import parse_qs

from ..errors import DeviceError, UsageError
from .local import LocalDevice

ARCH = "arm64"
DEVICE_PREFIX = "qemu-arm64"
QEMU_PACKAGE = "qemu-user-static"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
DEBIAN = {"suite": "bookworm", "mirror": "http://deb.debian.org/debian", "security": "http://deb.debian.org/debian-security"}
GLIBC = (2, 36)  # Debian 12's libc6: pip is offered exactly the manylinux tags a device with it accepts

# Debian 12 arm64 packages that make a working python3.11 with its stdlib.
DEBS = [
    "python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib", "libc6", "zlib1g", "libexpat1", "libffi8",
    "libssl3", "libgcc-s1", "libstdc++6", "libbz2-1.0", "liblzma5", "libsqlite3-0", "libuuid1", "libncursesw6",
    "libtinfo6", "libreadline8", "libdb5.3", "libcrypt1", "libnsl2", "libtirpc3",
    "base-files",  # /etc/os-release: the runner reports Debian 12, not the host's OS
]  # fmt: skip

# The two generations of Raspberry Pi OS software the arm64 profile meets.
GENERATIONS: Dict[str, List[str]] = {
    "1": ["numpy==1.26.4", "tflite-runtime==2.14.0"],  # older images: NumPy 1, tflite-runtime
    "2": ["numpy==2.2.6", "ai-edge-litert==2.3.0", "onnxruntime==1.31.1"],  # current: NumPy 2, LiteRT, onnxruntime
}
DEFAULT_GENERATION = "2"
# What each generation's Python must import (name, import statement): checked after every prepare.
IMPORTS = {
    "1": [("numpy", "import numpy as m"), ("tflite-runtime", "import tflite_runtime as m")],
    "2": [("numpy", "import numpy as m"), ("ai-edge-litert", "from ai_edge_litert import interpreter as m; import ai_edge_litert as m"),
          ("onnxruntime", "import onnxruntime as m")],
}  # fmt: skip


@dataclass(frozen=True)
class CpuModel:
    """What the emulated kernel's /proc/cpuinfo says (as on the board's own 64-bit kernel)."""

    qemu: str
    part: str
    variant: str
    revision: str
    features: str
    board: str


CPUS: Dict[str, CpuModel] = {
    "cortex-a72": CpuModel("cortex-a72", "0xd08", "0x0", "3", "fp asimd evtstrm crc32 cpuid", "Raspberry Pi 4 / 400"),
    "cortex-a76": CpuModel(
        "cortex-a76", "0xd0b", "0x4", "1",
        "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp", "Raspberry Pi 5",
    ),
}  # fmt: skip
DEFAULT_CPU = "cortex-a72"  # the arm64 profile's first device, the Raspberry Pi 4


# What of Debian's root the sysroot shows the emulated Python (the rest, /tmp and /root among them, stays the host's).
SYSROOT_DIRS = ("bin", "etc", "lib", "sbin", "usr")

def emulated_root() -> Path:
    """Where emulated devices live: $EDGESHIP_EMULATED_DIR, else <edgeship cache>/emulated."""
    from ..resources import cache_dir

    env = os.environ.get("EDGESHIP_EMULATED_DIR")
    return Path(env) if env else cache_dir() / "emulated"


def generation_dir(numpy: str = DEFAULT_GENERATION, root: Optional[Path] = None) -> Path:
    """The prepared Python of one generation, keyed by everything it is made of."""
    key = json.dumps([ARCH, DEBIAN, DEBS, GENERATIONS[numpy], GLIBC])
    return (root or emulated_root()) / f"{ARCH}-numpy{numpy}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def _complete(gen: Path) -> bool:
    return (gen / "prepared.json").is_file() and (gen / "root" / "usr" / "bin" / "python3.11").is_file()


def canonical_spec(cpu: str, numpy: str) -> str:
    return f"{DEVICE_PREFIX}:{cpu}?numpy={numpy}"


def parse_spec(spec: str) -> tuple[str, str]:
    """``qemu-arm64[:CPU][?numpy=1|2]`` -> (cpu, numpy generation)."""
    head, _, query = spec.partition("?")
    name, _, cpu = head.partition(":")
    if name != DEVICE_PREFIX:
        raise UsageError(f"unknown device {spec!r}: expected {DEVICE_PREFIX}[:CPU][?numpy=1|2]")
    cpu = cpu or DEFAULT_CPU
    if cpu not in CPUS:
        raise UsageError(f"{spec}: unknown CPU {cpu!r} (known: {', '.join(CPUS)})")
    opts = parse_qs(query, keep_blank_values=True)
    unknown = sorted(set(opts) - {"numpy"})
    if unknown:
        raise UsageError(f"{spec}: unknown option {', '.join(unknown)} (known: numpy=1|2)")
    numpy = (opts.get("numpy") or [DEFAULT_GENERATION])[-1]
    if numpy not in GENERATIONS:
        raise UsageError(f"{spec}: numpy={numpy} is not a generation (1: NumPy 1 + tflite-runtime 2.14; 2: NumPy 2 + ai-edge-litert + onnxruntime)")
    return cpu, numpy


# --------------------------------------------------------------------------- qemu and apt


def find_qemu() -> Optional[str]:
    return shutil.which("qemu-aarch64-static") or shutil.which("qemu-aarch64")


def _run(cmd: List[str], what: str, cwd: Optional[Path] = None, timeout: float = 600) -> str:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise DeviceError(f"{what}: {cmd[0]} not found (the emulated device is prepared on a Debian or Ubuntu host with apt)") from None
    except subprocess.TimeoutExpired:
        raise DeviceError(f"{what} did not finish within {timeout:.0f} s (is the network slow?)") from None
    if r.returncode != 0:
        lines = [ln.strip() for ln in (r.stderr or r.stdout).splitlines() if ln.strip() and not ln.startswith(("WARNING: Location", "W: "))]
        raise DeviceError(f"{what} failed: {(lines[-1] if lines else 'no output')[:300]}")
    return r.stdout


def ensure_host_tools(log: Callable[[str], None]) -> str:
    """qemu-aarch64 and Debian's archive keyring, installed with apt-get when missing and we are root."""
    qemu = find_qemu()
    missing = ([QEMU_PACKAGE] if not qemu else []) + (["debian-archive-keyring"] if not Path(KEYRING).is_file() else [])
    if not missing:
        return str(qemu)
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise DeviceError(f"the emulated device needs {' and '.join(missing)}: sudo apt-get install {' '.join(missing)}")
    log(f"installing {' '.join(missing)} with apt-get")
    lock = ["-o", "DPkg::Lock::Timeout=300"]  # another apt on the machine: wait for it rather than fail
    _run(["apt-get", *lock, "update", "-qq"], "apt-get update")
    _run(["apt-get", *lock, "install", "-y", "-qq", *missing], f"apt-get install {' '.join(missing)}")
    qemu = find_qemu()
    if not qemu:
        raise DeviceError(f"{QEMU_PACKAGE} installed but qemu-aarch64-static is not on PATH")
    return qemu


def _fetch_debs(work: Path, dest: Path) -> List[str]:
    """Download DEBS for arm64 through a private apt root (nothing of the host's apt changes); their file names."""
    apt = work / "apt"
    for d in ("etc/apt/sources.list.d", "etc/apt/apt.conf.d", "etc/apt/preferences.d", "var/lib/apt/lists/partial",
              "var/cache/apt/archives/partial", "var/lib/dpkg"):  # fmt: skip
        (apt / d).mkdir(parents=True, exist_ok=True)
    (apt / "var/lib/dpkg/status").write_text("")
    s = DEBIAN["suite"]
    entry = "Types: deb\nURIs: {uri}\nSuites: {suites}\nComponents: main\nArchitectures: arm64\nSigned-By: " + KEYRING + "\n"
    (apt / "etc/apt/sources.list.d/debian.sources").write_text(
        entry.format(uri=DEBIAN["mirror"], suites=f"{s} {s}-updates") + "\n" + entry.format(uri=DEBIAN["security"], suites=f"{s}-security")
    )
    opts = [
        "-o", f"Dir={apt}", "-o", f"Dir::State::status={apt}/var/lib/dpkg/status", "-o", "APT::Architecture=arm64",
        "-o", "APT::Architectures::=arm64", "-o", "Acquire::Languages=none", "-o", "Debug::NoLocking=1",
    ]  # fmt: skip
    if os.geteuid() == 0:  # apt's _apt sandbox user cannot write into a root-owned temp folder
        opts += ["-o", "APT::Sandbox::User=root"]
    _run(["apt-get", *opts, "update", "-qq"], "apt-get update (Debian arm64 package lists)")
    dest.mkdir(parents=True, exist_ok=True)
    _run(["apt-get", *opts, "download", "-qq", *DEBS], "apt-get download (Debian arm64 python3.11)", cwd=dest)
    shutil.rmtree(apt)
    return sorted(p.name for p in dest.glob("*.deb"))


def pip_platforms() -> List[str]:
    """The manylinux tags an aarch64 pip with Debian 12's glibc accepts (pip matches tags exactly)."""
    major, top = GLIBC
    return [f"manylinux_{major}_{v}_aarch64" for v in range(top, 16, -1)] + ["manylinux2014_aarch64", "linux_aarch64", "any"]


def _install_wheels(requirements: List[str], site: Path) -> None:
    plat = [x for p in pip_platforms() for x in ("--platform", p)]
    _run(
        [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--target", str(site),
         "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp", *plat, *requirements],
        f"pip install of the aarch64 wheels {' '.join(requirements)} (is PyPI reachable?)",
    )  # fmt: skip


def installed_wheels(site: Path) -> List[Dict[str, str]]:
    """name, version and platform tag of every wheel in site/ (from their WHEEL files)."""
    out = []
    for info in sorted(site.glob("*.dist-info")):
        meta = (info / "METADATA").read_text(errors="replace") if (info / "METADATA").is_file() else ""
        name = re.search(r"^Name: (.+)$", meta, re.M)
        version = re.search(r"^Version: (.+)$", meta, re.M)
        tags = re.findall(r"^Tag: (.+)$", (info / "WHEEL").read_text(errors="replace"), re.M) if (info / "WHEEL").is_file() else []
        out.append({
            "name": name.group(1).strip() if name else info.name, "version": version.group(1).strip() if version else "?",
            "platform": ".".join(sorted({t.split("-")[-1] for t in tags})) or "?",
        })  # fmt: skip
    return out


def _size(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            p = os.path.join(dirpath, f)
            if not os.path.islink(p):
                total += os.path.getsize(p)
    return total


# --------------------------------------------------------------------------- prepare


@dataclass
class Prepared:
    """An emulated device ready to deploy to, and what preparing it cost."""

    spec: str
    cpu: str
    numpy: str
    python: Path  # the wrapper deploy runs
    folder: Path
    cached: bool
    seconds: float
    size_bytes: int
    wheels: List[Dict[str, str]] = field(default_factory=list)
    debs: List[str] = field(default_factory=list)
    qemu: str = ""
    versions: Dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, object]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}


def prepare_generation(numpy: str = DEFAULT_GENERATION, force: bool = False, log: Callable[[str], None] = lambda m: None,
                       root: Optional[Path] = None) -> Path:  # fmt: skip
    """The generation's folder (root/ + site/), built once: Debian's arm64 packages and the wheels, fetched in parallel."""
    gen = generation_dir(numpy, root)
    if _complete(gen) and not force:
        return gen
    ensure_host_tools(log)
    from ..venvs import build_in_place

    def build(work: Path) -> None:
        work.mkdir(parents=True)
        log(f"fetching Debian {DEBIAN['suite']} arm64 python3.11 and the aarch64 wheels {' '.join(GENERATIONS[numpy])}")
        with ThreadPoolExecutor(max_workers=2) as pool:  # network-bound: apt and pip at once
            debs_f = pool.submit(_fetch_debs, work, work / "debs")
            wheels_f = pool.submit(_install_wheels, GENERATIONS[numpy], work / "site")
            debs = debs_f.result()
            wheels_f.result()
        for deb in debs:
            _run(["dpkg-deb", "-x", str(work / "debs" / deb), str(work / "root")], f"unpacking {deb}")
        shutil.rmtree(work / "debs")
        (work / "prepared.json").write_text(
            json.dumps({"arch": ARCH, "numpy": numpy, "debs": debs, "wheels": installed_wheels(work / "site"), "requirements": GENERATIONS[numpy]}, indent=1)
        )

    build_in_place(gen, build, _complete)  # with --force the old one stays usable until the new one is complete
    return gen


def cpuinfo(cpu: CpuModel, cores: int) -> str:
    """A /proc/cpuinfo as a 64-bit Raspberry Pi OS kernel writes it, one block per core."""
    block = (
        "processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: {c.features}\nCPU implementer\t: 0x41\nCPU architecture: 8\n"
        "CPU variant\t: {c.variant}\nCPU part\t: {c.part}\nCPU revision\t: {c.revision}\n"
    )
    return "\n".join(block.format(i=i, c=cpu) for i in range(cores)) + "\n"


def cpu_python(numpy: str = DEFAULT_GENERATION, cpu: str = DEFAULT_CPU, qemu_cpu: Optional[str] = None, root: Optional[Path] = None) -> Path:
    """The ``python3`` wrapper of a prepared generation on one CPU model (made here, offline, in milliseconds).

    ``qemu_cpu`` overrides qemu's -cpu while /proc/cpuinfo still says ``cpu``: only for the tests'
    broken case (``max``), never offered to users.
    """
    gen = generation_dir(numpy, root)
    if not _complete(gen):
        raise DeviceError(
            f"{canonical_spec(cpu, numpy)} is not prepared: run `edgeship device emulate {ARCH} --cpu {cpu} --numpy {numpy}` once "
            f"(fetches Debian's arm64 Python and the aarch64 wheels into {gen.parent})"
        )
    qemu = find_qemu()
    if not qemu:
        raise DeviceError(f"qemu-aarch64-static not found: sudo apt-get install {QEMU_PACKAGE}")
    q = shlex.quote  # the cache folder is the user's choice ($EDGESHIP_EMULATED_DIR): any characters
    model = CPUS[cpu]
    cores = os.cpu_count() or 1
    qcpu = qemu_cpu or model.qemu
    folder = gen / f"cpu-{cpu}-{qcpu}-{cores}"
    wrapper_text = (
        f"#!/bin/sh\n# edgeship device emulate {ARCH}: Debian 12's arm64 Python 3.11 on an emulated {cpu} ({model.board}), qemu -cpu {qcpu}\n"
        f"# sysroot: {' '.join(SYSROOT_DIRS)} and proc/cpuinfo\n"
        f"PYTHONNOUSERSITE=1 PYTHONPATH={q(str(gen / 'site'))} exec {q(qemu)} -cpu {q(qcpu)} -L {q(str(folder / 'sysroot'))} "
        f'{q(str(gen / "root/usr/bin/python3.11"))} "$@"\n'
    )
    if (folder / "python3").is_file() and (folder / "python3").read_text() == wrapper_text:
        return folder / "python3"
    from ..venvs import build_in_place

    def build(work: Path) -> None:
        sysroot = work / "sysroot"
        sysroot.mkdir(parents=True)
        # Only Debian's code and configuration, by symlink: qemu's -L redirects every path that exists
        # in the sysroot, so a linked tmp/ or root/ would send the device's own work folders (and
        # realpath on them) into the Debian tree and back. proc/ is this CPU's.
        for name in SYSROOT_DIRS:
            if (gen / "root" / name).exists():
                os.symlink(gen / "root" / name, sysroot / name)
        (sysroot / "proc").mkdir()
        (sysroot / "proc" / "cpuinfo").write_text(cpuinfo(model, cores))
        (work / "python3").write_text(wrapper_text)  # final paths: the folder is renamed into place once complete
        (work / "python3").chmod(0o755)

    build_in_place(folder, build, lambda d: (d / "python3").is_file())
    return folder / "python3"


def smoke(python: Path, numpy: str) -> Dict[str, str]:
    """Start the emulated Python and import the generation's runtimes: name -> version."""
    code = "import json, platform; v = {'python': platform.python_version(), 'machine': platform.machine()}\n"
    for name, stmt in IMPORTS[numpy]:
        code += f"{stmt}\nv[{name!r}] = getattr(m, '__version__', '?')\n"
    code += "print(json.dumps(v))"
    out = _run([str(python), "-c", code], f"starting the emulated Python ({python})", timeout=300)
    return json.loads(out.strip().splitlines()[-1])


def prepare(cpu: str = DEFAULT_CPU, numpy: str = DEFAULT_GENERATION, force: bool = False, log: Callable[[str], None] = lambda m: None,
            root: Optional[Path] = None) -> Prepared:  # fmt: skip
    """`edgeship device emulate arm64`: prepare (or find) the device, check it starts, say what it cost."""
    t0 = time.perf_counter()
    cached = _complete(generation_dir(numpy, root)) and not force
    gen = prepare_generation(numpy, force=force, log=log, root=root)
    python = cpu_python(numpy, cpu, root=root)
    log("starting the emulated Python to check its runtimes import")
    versions = smoke(python, numpy)
    meta = json.loads((gen / "prepared.json").read_text())
    return Prepared(
        spec=canonical_spec(cpu, numpy), cpu=cpu, numpy=numpy, python=python, folder=gen, cached=cached,
        seconds=time.perf_counter() - t0, size_bytes=_size(gen), wheels=meta["wheels"], debs=meta["debs"],
        qemu=find_qemu() or "", versions=versions,
    )  # fmt: skip


# --------------------------------------------------------------------------- the device


class QemuDevice(LocalDevice):
    """``qemu-arm64[:CPU][?numpy=1|2]``: a prepared emulated Pi, driven like any local Python."""

    def __init__(self, cpu: str = DEFAULT_CPU, numpy: str = DEFAULT_GENERATION) -> None:
        super().__init__(str(cpu_python(numpy, cpu)))
        self.cpu, self.numpy = cpu, numpy
        self.label = canonical_spec(cpu, numpy)  # one name per device: qemu-arm64 and qemu-arm64:cortex-a72 are the same

    @classmethod
    def from_spec(cls, spec: str) -> "QemuDevice":
        cpu, numpy = parse_spec(spec)
        return cls(cpu, numpy)

    def python_install_hint(self) -> str:
        return f"run `edgeship device emulate {ARCH} --cpu {self.cpu} --numpy {self.numpy}` again (add --force to rebuild it)"
