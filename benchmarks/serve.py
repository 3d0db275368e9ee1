"""Load test of `edgeship-runner.pyz serve` on loopback: bounded (at most a minute), stops by itself.

Serves the sample arm64 bundle (built here, or --bundle) from a device-like venv (NumPy 2, LiteRT,
onnxruntime, uvicorn, Starlette: tests/device_fixtures.py), with dynamic batching off then on, and
drives it from this process with a bounded client loop (keep-alive http.client connections, one
thread each, one JSON request of one sample at a time per client) at 1, 4 and 16 concurrent clients.
Prints requests/s, p50/p99 latency, errors, the server's resident memory at start and after
10,000 requests, and the overhead per request over the same call without HTTP (the runner's float `run` of one
sample, timed in the same venv before and after) at one client.
    python benchmarks/serve.py [--bundle DIR] [--artifact NAME] [--seconds 3] [--batch-ms 2]
The clients share the machine's cores with the server: on a 2-core host the 16-client figures are
the client loop's limit as much as the server's.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
DEADLINE_S = 60.0

BARE = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np
from edgeship_runner.runners import open_runner
r = open_runner(sys.argv[2], threads=1)
x = np.load(sys.argv[3])["image"][:1].astype(np.float32)
name = r.inputs[0].name
for _ in range(200):
    r.run({name: x})
t = []
end = time.perf_counter() + float(sys.argv[4])
while time.perf_counter() < end:
    t0 = time.perf_counter(); r.run({name: x}); t.append(time.perf_counter() - t0)
t.sort()
print(json.dumps({"p50_ms": t[len(t) // 2] * 1e3, "p99_ms": t[int(len(t) * 0.99)] * 1e3, "runs": len(t)}))
"""


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def post(conn: http.client.HTTPConnection, path: str, body: bytes) -> int:
    conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    r.read()
    return r.status


def load(port: int, path: str, body: bytes, clients: int, seconds: float, max_requests: Optional[int] = None) -> Dict[str, Any]:
    """``clients`` threads sending back-to-back for ``seconds`` (or until ``max_requests`` in all)."""
    lat: List[float] = []
    errors = [0]
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds
    count = [0]

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        mine: List[float] = []
        bad = 0
        while time.perf_counter() < stop_at:
            with lock:
                if max_requests is not None and count[0] >= max_requests:
                    break
                count[0] += 1
            t0 = time.perf_counter()
            try:
                ok = post(conn, path, body) == 200
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            if ok:
                mine.append(time.perf_counter() - t0)
            else:
                bad += 1
        conn.close()
        with lock:
            lat.extend(mine)
            errors[0] += bad

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat.sort()
    n = len(lat)
    return {
        "clients": clients, "requests": n, "errors": errors[0], "seconds": round(wall, 2), "rps": round(n / wall, 1),
        "p50_ms": round(lat[n // 2] * 1e3, 3) if n else None, "p99_ms": round(lat[min(n - 1, int(n * 0.99))] * 1e3, 3) if n else None,
    }


def start_server(python: Path, bundle: Path, port: int, extra: List[str]) -> subprocess.Popen:
    proc = subprocess.Popen(
        [str(python), str(bundle / "edgeship-runner.pyz"), "serve", str(bundle), "--port", str(port), *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.time() + 30
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"serve exited: {proc.stderr.read() if proc.stderr else ''}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", "/v2/health/ready")
            if c.getresponse().status == 200:
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    sys.exit("serve did not become ready in 30 s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=None, help="a built bundle (default: build the sample arm64 one)")
    ap.add_argument("--artifact", default=None, help="serve this artifact (default: what serve chooses)")
    ap.add_argument("--seconds", type=float, default=3.0, help="seconds per concurrency level (default 3)")
    ap.add_argument("--batch-ms", type=float, default=2.0, help="batching window when batching is on (default 2)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()

    from edgeship.bundle import host_facts
    from tests.device_fixtures import SERVE_REQUIREMENTS, ensure_venv, free_port

    py = ensure_venv(SERVE_REQUIREMENTS)
    tmp = Path(tempfile.mkdtemp(prefix="edgeship-bench-serve-"))
    bundle = args.bundle
    if bundle is None:
        from edgeship.build import run_build

        bundle = run_build(target="arm64", out=str(tmp / "digits-arm64"), runs=10).bundle
    manifest = json.loads((bundle / "manifest.json").read_text())
    inputs = bundle / "parity" / "inputs.npz"
    import numpy as np

    with np.load(inputs) as z:
        x = z["image"][:1].astype(np.float32)
    body = json.dumps({"inputs": [{"name": "image", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]}).encode()
    path = f"/v2/models/{manifest['model']['name']}/infer"
    h = host_facts()
    print(f"host: {h['cpu']} ({h['cores']} cores), loaded by other work; server: {py}")
    began = time.perf_counter()

    def left() -> float:
        return DEADLINE_S - (time.perf_counter() - began)

    results: Dict[str, Any] = {"host": h["cpu"], "cores": h["cores"], "modes": {}}
    served_artifact = None
    for mode, extra in (("batching off", []), (f"batching on ({args.batch_ms:g} ms)", ["--batch-ms", str(args.batch_ms)])):
        if args.artifact:
            extra = [*extra, "--artifact", args.artifact]
        port = free_port()
        proc = start_server(py, bundle, port, extra)
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            c.request("GET", f"/v2/models/{manifest['model']['name']}")
            meta = json.loads(c.getresponse().read())
            served_artifact = meta["edgeship"]["artifact"]
            load(port, path, body, 1, 0.3)  # warm-up: the first invokes and the first connection
            start_mb = rss_mb(proc.pid)
            levels, total = [], 0
            for clients in (1, 4, 16):
                seconds = min(args.seconds, max(0.0, left() / 4))
                r = load(port, path, body, clients, seconds)
                levels.append(r)
                total += r["requests"] + r["errors"]
            if total < 10_000 and left() > 1:
                r = load(port, path, body, 4, max(0.5, left() - 1), max_requests=10_000 - total)
                total += r["requests"] + r["errors"]
            results["modes"][mode] = {
                "levels": levels, "requests_total": total, "rss_start_mb": round(start_mb, 1), "rss_end_mb": round(rss_mb(proc.pid), 1),
                "batching": meta["edgeship"]["batching"], "alive": proc.poll() is None,
            }
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    bare = subprocess.run([str(py), "-c", BARE, str(bundle / "edgeship-runner.pyz"), str(bundle / served_artifact), str(inputs), "2"], capture_output=True, text=True)
    if bare.returncode != 0:
        sys.exit(f"the runner float call failed: {bare.stderr[-400:]}")
    results["bare_invoke"] = json.loads(bare.stdout)
    results["artifact"] = served_artifact
    results["wall_s"] = round(time.perf_counter() - began, 1)

    print(f"artifact: {served_artifact}; one JSON request = 1 sample; {args.seconds:g} s per level; total {results['wall_s']} s")
    print(f"runner float call, no HTTP (what serve calls per request; its I/O conversion included, 1 thread): p50 {results['bare_invoke']['p50_ms']:.3f} ms, p99 {results['bare_invoke']['p99_ms']:.3f} ms")
    print(f"{'mode':<24} {'clients':>7} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}")
    for mode, m in results["modes"].items():
        for r in m["levels"]:
            print(f"{mode:<24} {r['clients']:>7} {r['rps']:>8.1f} {r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f} {r['errors']:>6}")
        print(f"{mode:<24} server RSS {m['rss_start_mb']} MiB at start, {m['rss_end_mb']} MiB after {m['requests_total']} requests; alive: {m['alive']}")
    one = results["modes"]["batching off"]["levels"][0]
    overhead = one["p50_ms"] - results["bare_invoke"]["p50_ms"]
    results["overhead_ms_one_client"] = round(overhead, 3)
    print(f"overhead per request over that call at 1 client (p50, batching off, client loop included): {overhead:.3f} ms (goal <= 1 ms)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
