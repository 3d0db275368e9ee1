"""`serve`: the bundle's model over the Open Inference Protocol (KServe v2) REST subset.

The wire format Triton, KServe, MLServer, Seldon and OpenVINO Model Server share, so their clients
(tritonclient, curl) call a model edgeship built and checked. uvicorn + Starlette do the HTTP
(`http.server` is not for production); they are an optional install on the device, imported only
here, only by `serve`. Interpreters are not thread-safe: a pool of them, one request (or one batch)
each at a time. Every request is checked against the model (size, names, datatypes, shapes) before
anything runs, and a bad one is a 4xx with ``{"error": ...}``, never a dead server.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import hmac
import json
import os
import queue
import sys
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

if TYPE_CHECKING:  # NumPy is imported when used, so `--help` works (and says so) without it
    import numpy as np

from .cli import (
    EXIT_OK,
    EXIT_RUNTIME,
    RunnerError,
    default_threads,
    runner_options,
    runtime_status,
    select,
    verify_artifact,
)

SERVE_INSTALL = "python3 -m pip install uvicorn starlette"
BINARY_HEADER = "Inference-Header-Content-Length"
MAX_BODY_MB = 8.0
MAX_BATCH = 64


def serve_status() -> Dict[str, Any]:
    """Can `serve` run here: uvicorn and Starlette importable (with their versions), else the pip line."""
    try:
        import starlette
        import uvicorn
    except Exception as e:  # ImportError, or a broken install
        return {"available": False, "install": SERVE_INSTALL, "error": f"{type(e).__name__}: {e}"}
    return {"available": True, "uvicorn": uvicorn.__version__, "starlette": getattr(starlette, "__version__", "unknown")}


def choose_artifact(manifest: Dict[str, Any], names: Optional[List[str]]) -> Tuple[Dict[str, Any], str]:
    """(artifact, why it was chosen): the one named, else the manifest's ``shipped`` one (a name, a list,
    or {format: name}), else the first that passed parity on the host, in the profile's order, whose
    runtime is installed here."""
    if names:
        return select(manifest, names[:1])[0], "named with --artifact"
    shipped = manifest.get("shipped")
    wanted = list(shipped.values()) if isinstance(shipped, dict) else shipped if isinstance(shipped, list) else [shipped] if shipped else []
    by = {a["path"]: a for a in manifest["artifacts"]}
    by.update({a["key"]: a for a in manifest["artifacts"]})
    by.update({a["file"]: a for a in manifest["artifacts"]})
    for w in wanted:
        a = by.get(w) if isinstance(w, str) else None
        if a is not None and runtime_status(a["format"])["available"]:
            return a, "the manifest's shipped artifact"
    for a in manifest["artifacts"]:
        if a.get("passed") and runtime_status(a["format"])["available"]:
            return a, "the first artifact that passed parity on the host with a runtime installed here"
    passed = [a["path"] for a in manifest["artifacts"] if a.get("passed")]
    if not passed:
        raise RunnerError("no artifact in this bundle passed parity on the host; name one with --artifact to serve it anyway")
    from .runners import ORT_INSTALL, TFLITE_INSTALL

    fmts = {a["format"] for a in manifest["artifacts"] if a.get("passed")}
    lines = "; ".join(TFLITE_INSTALL if f == "tflite" else ORT_INSTALL for f in sorted(fmts))
    raise RunnerError(f"no runtime installed here for the artifacts that passed parity ({', '.join(passed)}): {lines}", EXIT_RUNTIME)


class BadRequest(Exception):
    """A request the model cannot take: its HTTP status and one readable sentence."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def accepts_batch(runner: Any) -> bool:
    """Whether one invoke can take several samples (a dynamic first dimension), so batching pays."""
    if runner.format == "onnx":
        return bool(getattr(runner, "_dyn_batch", False))
    details = getattr(runner, "_in", [])
    return bool(details) and all(len(d.get("shape_signature", [])) and d["shape_signature"][0] == -1 for d in details)


class Model:
    """The served artifact: a pool of interpreters, its float-facing I/O, and the request checks."""

    def __init__(
        self,
        bundle: str,
        manifest: Dict[str, Any],
        art: Dict[str, Any],
        why: str,
        workers: int,
        threads: Optional[int],
        batch_ms: float = 0.0,
        max_batch: int = MAX_BATCH,
    ) -> None:
        from .runners import open_runner

        self.bundle, self.manifest, self.art, self.why = bundle, manifest, art, why
        self.name = str(manifest.get("model", {}).get("name") or "model")
        path = verify_artifact(bundle, manifest, art)
        opts = runner_options(manifest, art["format"])
        self.runners = [open_runner(path, art["format"], threads=threads, **opts) for _ in range(max(1, workers))]
        self.pool: "queue.Queue[Any]" = queue.Queue()
        for r in self.runners:
            self.pool.put(r)
        first = self.runners[0]
        self.backend = f"{first.backend} {first.backend_version}"
        self.inputs = [(t.name, list(t.shape[1:])) for t in first.inputs]
        self.outputs = [(t.name, list(t.shape[1:])) for t in first.outputs]
        self.threads = threads
        self.max_batch = max(1, int(max_batch))
        self.batchable = accepts_batch(first)
        self.batch_ms = float(batch_ms) if self.batchable else 0.0
        self._pending: "collections.deque[Any]" = collections.deque()  # (feed, future) waiting for a batch
        self._wake: Optional[asyncio.Event] = None
        self._slots: Optional[asyncio.Semaphore] = None
        self._running = 0  # batches being invoked now
        self.stats = {"requests": 0, "invokes": 0}  # served since start (the metadata shows them)

    # ------------------------------------------------------------------ description

    def metadata(self) -> Dict[str, Any]:
        """The v2 model metadata: float tensors, batch dimension -1 (any batch up to max_batch)."""
        return {
            "name": self.name,
            "versions": ["1"],
            "platform": "tflite" if self.art["format"] == "tflite" else "onnxruntime_onnx",
            "inputs": [{"name": n, "datatype": "FP32", "shape": [-1, *s]} for n, s in self.inputs],
            "outputs": [{"name": n, "datatype": "FP32", "shape": [-1, *s]} for n, s in self.outputs],
            "edgeship": {
                "bundle": os.path.abspath(self.bundle),
                "artifact": self.art["file"],
                "key": self.art.get("key"),
                "chosen": self.why,
                "backend": self.backend,
                "interpreters": len(self.runners),
                "threads_per_interpreter": self.threads,
                "batching": {"on": self.batch_ms > 0, "window_ms": self.batch_ms, "max_batch": self.max_batch, "model_accepts_batch": self.batchable},
                "served": dict(self.stats),
            },
        }

    # ------------------------------------------------------------------ checks

    def parse_infer(self, body: bytes, header_len: Optional[str]) -> Tuple[Dict[str, Any], Dict[str, np.ndarray], List[str], bool]:
        """(request JSON, feed, requested output names, binary outputs?) or BadRequest saying what is wrong."""
        import numpy as np

        if header_len is not None:
            try:
                n = int(header_len)
            except ValueError:
                raise BadRequest(f"{BINARY_HEADER} is not a number: {header_len[:40]!r}") from None
            if not 0 < n <= len(body):
                raise BadRequest(f"{BINARY_HEADER} {n} is outside the body of {len(body)} bytes")
            head, blob = body[:n], body[n:]
        else:
            head, blob = body, b""
        try:
            req = json.loads(head)
        except (ValueError, UnicodeDecodeError) as e:
            raise BadRequest(f"the request body is not valid JSON ({e})") from None
        except RecursionError:
            raise BadRequest("the request body is not valid JSON (nested too deeply)") from None
        if not isinstance(req, dict) or not isinstance(req.get("inputs"), list):
            raise BadRequest('the request must be a JSON object with an "inputs" list')
        want = {n: s for n, s in self.inputs}
        feed: Dict[str, np.ndarray] = {}
        offset = 0
        for t in req["inputs"]:
            if not isinstance(t, dict):
                raise BadRequest("each input must be an object with name, shape, datatype and data")
            name = t.get("name")
            if name not in want:
                raise BadRequest(f"unknown input {str(name)[:80]!r}: the model's inputs are {', '.join(want)}")
            if name in feed:
                raise BadRequest(f"input {name!r} given twice")
            if t.get("datatype") != "FP32":
                raise BadRequest(f"input {name!r} has datatype {str(t.get('datatype'))[:20]!r}; the model takes FP32")
            shape = t.get("shape")
            if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
                raise BadRequest(f"input {name!r} needs a shape: a list of integers")
            if len(shape) != len(want[name]) + 1 or shape[1:] != want[name] or not 1 <= shape[0] <= self.max_batch:
                raise BadRequest(
                    f"input {name!r} has shape {shape[:8]}; the model takes [N, {', '.join(map(str, want[name]))}] with 1 <= N <= {self.max_batch}"
                )
            count = int(np.prod(shape))
            params = t.get("parameters") or {}
            if not isinstance(params, dict):
                raise BadRequest(f"input {name!r}: parameters must be an object")
            size = params.get("binary_data_size")
            if size is not None:
                if not isinstance(size, int) or size != count * 4:
                    raise BadRequest(f"input {name!r}: binary_data_size {str(size)[:20]} is not {count * 4} ({count} FP32 values)")
                if offset + size > len(blob):
                    raise BadRequest(f"input {name!r}: the body holds {len(blob) - offset} binary bytes, not {size}")
                x = np.frombuffer(blob, dtype="<f4", count=count, offset=offset)
                offset += size
            else:
                data = t.get("data")
                if data is None:
                    raise BadRequest(f"input {name!r} has no data")
                try:
                    x = np.asarray(data, dtype=np.float32)
                except (ValueError, TypeError, RecursionError):
                    raise BadRequest(f"input {name!r}: data must be numbers (FP32), flat or nested") from None
                if x.size != count:
                    raise BadRequest(f"input {name!r}: {x.size} values for shape {shape} ({count} expected)")
            feed[name] = x.reshape(shape)
        missing = [n for n in want if n not in feed]
        if missing:
            raise BadRequest(f"missing input(s) {', '.join(missing)}")
        if offset != len(blob):
            raise BadRequest(f"{len(blob) - offset} binary bytes after the last input's binary_data_size")
        batches = {int(v.shape[0]) for v in feed.values()}
        if len(batches) > 1:
            raise BadRequest(f"inputs disagree on the batch size: {sorted(batches)}")
        params = req.get("parameters") if isinstance(req.get("parameters"), dict) else {}
        binary_all = bool(params.get("binary_data_output", False))
        outs = req.get("outputs")
        names = [n for n, _ in self.outputs]
        binary = binary_all
        if outs is not None:
            if not isinstance(outs, list) or not all(isinstance(o, dict) for o in outs):
                raise BadRequest('"outputs" must be a list of objects with a name')
            unknown = [str(o.get("name"))[:80] for o in outs if o.get("name") not in names]
            if unknown:
                raise BadRequest(f"unknown output(s) {', '.join(unknown)}: the model's outputs are {', '.join(names)}")
            if outs:
                names = [o["name"] for o in outs]
                binary = any(bool((o.get("parameters") or {}).get("binary_data", binary_all)) for o in outs)
        return req, feed, names, binary

    # ------------------------------------------------------------------ running

    def invoke(self, feed: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Run ``feed`` on a free interpreter (blocks until one is free; called in a worker thread)."""
        runner = self.pool.get()
        try:
            self.stats["invokes"] += 1
            return runner.run(feed)
        finally:
            self.pool.put(runner)

    async def infer(self, feed: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        from starlette.concurrency import run_in_threadpool

        self.stats["requests"] += 1
        if self.batch_ms <= 0:
            return await run_in_threadpool(self.invoke, feed)
        if self._wake is None:
            self._wake = asyncio.Event()
            self._slots = asyncio.Semaphore(len(self.runners))
            asyncio.get_running_loop().create_task(self._batch_loop())
        fut = asyncio.get_running_loop().create_future()
        self._pending.append((feed, fut))
        self._wake.set()
        return await fut

    async def _batch_loop(self) -> None:
        """Dynamic batching: wait for a free interpreter, then (only while another invoke runs, so a lone
        request never waits) the window, then take what queued (up to max_batch samples) into one
        invoke; a request is never split."""
        assert self._wake is not None and self._slots is not None
        while True:
            while not self._pending:
                self._wake.clear()
                await self._wake.wait()
            await self._slots.acquire()
            if self._running:
                await asyncio.sleep(self.batch_ms / 1000.0)
            items = [self._pending.popleft()]
            n = _n(items[0][0])
            while self._pending and n + _n(self._pending[0][0]) <= self.max_batch:  # one that does not fit waits
                items.append(self._pending.popleft())
                n += _n(items[-1][0])
            self._running += 1
            asyncio.get_running_loop().create_task(self._run_batch(items))

    async def _run_batch(self, items: List[Any]) -> None:
        import numpy as np
        from starlette.concurrency import run_in_threadpool

        assert self._slots is not None
        try:
            if len(items) == 1:
                feed = items[0][0]
            else:
                feed = {k: np.concatenate([f[k] for f, _ in items]) for k in items[0][0]}
            try:
                out = await run_in_threadpool(self.invoke, feed)
            except Exception as e:
                for _, fut in items:
                    if not fut.done():
                        fut.set_exception(e)
                return
            start = 0
            for f, fut in items:
                k = _n(f)
                if not fut.done():
                    fut.set_result({name: y[start : start + k] for name, y in out.items()})
                start += k
        finally:
            self._running -= 1
            self._slots.release()


def _n(feed: Dict[str, np.ndarray]) -> int:
    return int(next(iter(feed.values())).shape[0])


def encode_outputs(model: Model, req: Dict[str, Any], out: Dict[str, np.ndarray], names: List[str], binary: bool) -> Tuple[bytes, Dict[str, str]]:
    """The v2 response body and its headers: JSON data, or a JSON header followed by raw little-endian FP32."""
    import numpy as np

    tensors, blobs = [], []
    for name in names:
        y = np.ascontiguousarray(out[name], dtype="<f4")
        t: Dict[str, Any] = {"name": name, "datatype": "FP32", "shape": list(y.shape)}
        if binary:
            t["parameters"] = {"binary_data_size": y.nbytes}
            blobs.append(y.tobytes())
        else:
            t["data"] = y.ravel().tolist()
        tensors.append(t)
    resp: Dict[str, Any] = {"model_name": model.name, "model_version": "1", "outputs": tensors}
    if isinstance(req.get("id"), str):
        resp["id"] = req["id"]
    head = json.dumps(resp, separators=(",", ":")).encode()
    if not binary:
        return head, {"content-type": "application/json"}
    return head + b"".join(blobs), {"content-type": "application/octet-stream", BINARY_HEADER.lower(): str(len(head))}


# --------------------------------------------------------------------------- the app


def make_app(model: Model, token: Optional[str] = None, max_body: int = int(MAX_BODY_MB * (1 << 20))) -> Any:
    """The Starlette app: v2 health, metadata, ready and infer, plus edgeship's own image endpoint."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    def error(status: int, message: str, headers: Optional[Dict[str, str]] = None) -> Any:
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    def authorized(request: Request) -> bool:
        if token is None:
            return True
        got = request.headers.get("authorization", "")
        return got.startswith("Bearer ") and hmac.compare_digest(got[7:].strip().encode(), token.encode())

    def known(request: Request) -> Optional[Any]:
        """An error response for a missing token or an unknown model/version, else None."""
        if not authorized(request):
            return error(401, "missing or wrong bearer token (send Authorization: Bearer TOKEN)", {"www-authenticate": "Bearer"})
        name = request.path_params.get("name")
        if name is not None and name != model.name:
            return error(404, f"unknown model {name[:80]!r}: this server serves {model.name!r}")
        version = request.path_params.get("version")
        if version is not None and version != "1":
            return error(404, f"unknown version {version[:20]!r} of {model.name!r}: it has version 1")
        return None

    async def read_body(request: Request) -> bytes:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > max_body):
            raise BadRequest(f"the request body is over the limit of {max_body} bytes (--max-body-mb)", 413)
        if request.headers.get("content-encoding", "identity") not in ("identity", ""):
            raise BadRequest("compressed request bodies are not accepted; send them uncompressed", 415)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body:
                raise BadRequest(f"the request body is over the limit of {max_body} bytes (--max-body-mb)", 413)
            chunks.append(chunk)
        return b"".join(chunks)

    async def live(request: Request) -> Any:
        return JSONResponse({"live": True})

    async def ready(request: Request) -> Any:
        return JSONResponse({"ready": True})

    async def server_meta(request: Request) -> Any:
        bad = known(request)
        if bad is not None:
            return bad
        return JSONResponse({"name": "edgeship-runner", "version": "1", "extensions": ["binary_tensor_data", "edgeship_image"]})

    async def model_meta(request: Request) -> Any:
        return known(request) or JSONResponse(model.metadata())

    async def model_ready(request: Request) -> Any:
        return known(request) or JSONResponse({"name": model.name, "ready": True})

    async def infer(request: Request) -> Any:
        bad = known(request)
        if bad is not None:
            return bad
        try:
            body = await read_body(request)
            req, feed, names, binary = model.parse_infer(body, request.headers.get(BINARY_HEADER.lower()))
        except BadRequest as e:
            return error(e.status, str(e))
        try:
            out = await model.infer(feed)
        except Exception as e:  # the runtime's own error: the server stays up
            return error(500, f"{type(e).__name__}: {str(e)[:300]}")
        content, headers = encode_outputs(model, req, out, names, binary)
        return Response(content, headers=headers)

    async def classify(request: Request) -> Any:
        """edgeship's own endpoint (not part of the v2 protocol): an image file in, the top classes out,
        with the preprocessing recorded in the manifest."""
        bad = known(request)
        if bad is not None:
            return bad
        spec = model.manifest.get("preprocessing")
        if not spec:
            return error(404, "this bundle records no preprocessing, so it cannot take images; use /v2/models/{name}/infer")
        from .images import OpenCVMissing, decode_image, preprocess, top_classes

        try:
            body = await read_body(request)
            if not body:
                raise BadRequest("send the image file as the request body (png, jpg, ...)")
            img = decode_image(body, spec)
            x = preprocess(img, spec, [1, *model.inputs[0][1]])
        except BadRequest as e:
            return error(e.status, str(e))
        except ValueError as e:
            return error(400, str(e))
        except OpenCVMissing as e:
            return error(501, str(e))
        try:
            top_k = max(1, min(int(request.query_params.get("top", "3")), 1000))
        except ValueError:
            return error(400, "top must be an integer")
        out = await model.infer({model.inputs[0][0]: x})
        scores = out[model.outputs[0][0]][0]
        top = top_classes(scores, model.manifest.get("class_names"), top_k)
        return JSONResponse({"model_name": model.name, "artifact": model.art["file"], "top": [{"label": n, "score": round(p, 6)} for n, p in top]})

    async def not_found(request: Request, exc: Exception) -> Any:
        status = getattr(exc, "status_code", 500)
        detail = getattr(exc, "detail", None) or "error"
        if status == 404:
            detail = f"no such endpoint: {request.method} {request.url.path[:100]}"
        return error(status, str(detail))

    routes = [
        Route("/v2/health/live", live),
        Route("/v2/health/ready", ready),
        Route("/v2", server_meta),
        Route("/v2/models/{name}", model_meta),
        Route("/v2/models/{name}/versions/{version}", model_meta),
        Route("/v2/models/{name}/ready", model_ready),
        Route("/v2/models/{name}/versions/{version}/ready", model_ready),
        Route("/v2/models/{name}/infer", infer, methods=["POST"]),
        Route("/v2/models/{name}/versions/{version}/infer", infer, methods=["POST"]),
        Route("/edgeship/v1/models/{name}/classify", classify, methods=["POST"]),
    ]
    async def crashed(request: Request, exc: Exception) -> Any:  # a bug of ours: JSON too, and the server stays up
        return error(500, f"{type(exc).__name__}: {str(exc)[:300]}")

    return Starlette(routes=routes, exception_handlers={HTTPException: not_found, Exception: crashed})


# --------------------------------------------------------------------------- systemd


def unit_text(bundle: str, model: str, python: str, pyz: str, args: List[str], user: Optional[str]) -> str:
    """A systemd unit that starts `serve` at boot and restarts it if it stops.

    The model's name comes from the bundle (someone else's file) and the unit runs at boot: a newline
    in it would add directives of the bundle author's choosing, so it is reduced to plain characters;
    ``%`` is doubled everywhere (systemd expands ``%x`` specifiers)."""
    import re
    import shlex

    for x in (bundle, python, pyz, *args):
        if any(c in x for c in "\r\n\x00"):
            raise RunnerError(f"cannot write a unit for {x!r}: a path or argument with a line break")
    cmd = " ".join(shlex.quote(x) for x in [python, pyz, "serve", bundle, *args]).replace("%", "%%")
    label = re.sub(r"[^A-Za-z0-9 _.,:/@+=-]", "-", model)[:100].replace("%", "%%")
    lines = [
        "[Unit]",
        f"Description=edgeship serve: {label} from {bundle.replace('%', '%%')}",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        f"ExecStart={cmd}",
        f"WorkingDirectory={bundle.replace('%', '%%')}",
        "Restart=on-failure",
        "RestartSec=2",
        "NoNewPrivileges=yes",
    ]
    if user:
        lines.append(f"User={user}")
    lines += ["", "[Install]", "WantedBy=multi-user.target", ""]
    return "\n".join(lines)


def install_service(args: Any, manifest: Dict[str, Any]) -> int:
    """Print the unit; with --yes write it and enable + start it with systemctl."""
    import getpass
    import re
    import shutil
    import subprocess

    bundle = os.path.abspath(args.bundle)
    pyz = os.path.abspath(sys.argv[0]) if sys.argv[0].endswith(".pyz") else os.path.join(bundle, "edgeship-runner.pyz")
    passed: List[str] = ["--host", args.host, "--port", str(args.port)]
    for a in args.artifact or []:
        passed += ["--artifact", a]
    for flag, value in (("--workers", args.workers), ("--threads", args.threads), ("--token-file", args.token_file and os.path.abspath(args.token_file))):
        if value:
            passed += [flag, str(value)]
    if args.batch_ms:
        passed += ["--batch-ms", str(args.batch_ms)]
    model = str(manifest.get("model", {}).get("name") or "model")
    name = "edgeship-serve-" + re.sub(r"[^A-Za-z0-9_.-]", "-", model) + ".service"
    user = (os.environ.get("SUDO_USER") or None) if os.geteuid() == 0 else getpass.getuser()  # sudo: run as the user, not root
    text = unit_text(bundle, model, sys.executable, pyz, passed, user)
    dest = os.path.join(args.unit_dir, name)
    print(f"# {dest}\n{text}")
    if not args.yes:
        print(f"# not installed: review the unit above, then run the same command with --yes to write it to {dest} and start it", file=sys.stderr)
        return EXIT_OK
    try:
        os.makedirs(args.unit_dir, exist_ok=True)
        tmp = dest + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, dest)
    except OSError as e:
        raise RunnerError(f"cannot write {dest}: {e.strerror} (run as root, e.g. with sudo, or choose --unit-dir)", EXIT_RUNTIME) from None
    print(f"wrote {dest}", file=sys.stderr)
    if not shutil.which("systemctl") or not os.path.isdir("/run/systemd/system"):
        raise RunnerError(f"{dest} is written, but systemd is not running here: start the server by hand (python3 {pyz} serve)", EXIT_RUNTIME)
    for cmd in (["systemctl", "daemon-reload"], ["systemctl", "enable", "--now", name]):
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise RunnerError(f"{' '.join(cmd)} failed: {(r.stderr or r.stdout).strip()[:300]}", EXIT_RUNTIME)
    print(f"started {name}; it starts again at boot (systemctl status {name})", file=sys.stderr)
    return EXIT_OK


# --------------------------------------------------------------------------- the command


def read_token(args: Any) -> Optional[str]:
    """The bearer token from --token-file or $EDGESHIP_SERVE_TOKEN (never a command-line value: ps shows those)."""
    if args.token_file:
        try:
            with open(args.token_file) as f:
                tok = f.read().strip()
        except OSError as e:
            raise RunnerError(f"cannot read --token-file {args.token_file}: {e.strerror}") from None
        if not tok:
            raise RunnerError(f"--token-file {args.token_file} is empty")
        return tok
    return os.environ.get("EDGESHIP_SERVE_TOKEN") or None


def cmd_serve(args: argparse.Namespace) -> int:
    from .cli import check_signature, load_manifest

    manifest = load_manifest(args.bundle)
    check_signature(args, manifest)  # --require-signature: refuse an unsigned bundle before serving it
    if args.install_service:
        choose_artifact(manifest, args.artifact)  # refuse now what would fail at every boot
        return install_service(args, manifest)
    st = serve_status()
    if not st["available"]:
        raise RunnerError(f"serve needs uvicorn and Starlette, not installed for this Python: {SERVE_INSTALL}", EXIT_RUNTIME)
    if not 0 < args.port < 65536:
        raise RunnerError(f"--port {args.port} is not a TCP port (1-65535)")
    token = read_token(args)
    art, why = choose_artifact(manifest, args.artifact)
    cores = os.cpu_count() or 1
    workers = args.workers or cores
    threads = args.threads or max(1, (default_threads(manifest) or cores) // workers)
    model = Model(args.bundle, manifest, art, why, workers, threads, batch_ms=args.batch_ms, max_batch=args.max_batch)
    app = make_app(model, token, int(args.max_body_mb * (1 << 20)))
    import uvicorn

    batching = f"batching {model.batch_ms:g} ms window, up to {model.max_batch}" if model.batch_ms else (
        "batching off" if model.batchable or not args.batch_ms else "batching off (the model takes one sample per invoke)"
    )
    print(
        f"serving {model.name} from {art['file']} ({why}; {model.backend}) on http://{args.host}:{args.port}/v2/models/{model.name}"
        f" — {len(model.runners)} interpreter(s) x {threads} thread(s), {batching}, token {'required' if token else 'off'}",
        file=sys.stderr,
        flush=True,
    )
    if args.host not in ("127.0.0.1", "localhost", "::1") and not token:
        print("warning: listening beyond this machine without a token: anyone who can reach the port can run the model", file=sys.stderr)
    # limit_concurrency: past that many open connections and tasks uvicorn answers 503 instead of queueing without bound
    config = uvicorn.Config(
        app, host=args.host, port=args.port, log_level="warning", access_log=False, lifespan="off", server_header=False, limit_concurrency=256
    )
    server = uvicorn.Server(config)
    server.run()
    return EXIT_OK



def add_parser(sub: Any) -> None:
    """The `serve` subcommand's arguments (cli.py registers it)."""
    from .cli import bounded  # every count and size has bounds, as in the other runner commands

    sp = sub.add_parser("serve", help="serve the model over HTTP with the Open Inference Protocol (KServe v2); needs uvicorn + starlette")
    sp.add_argument("bundle", nargs="?", default=None, help="bundle folder (default: the runner's own folder)")
    sp.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    sp.add_argument("--port", type=bounded(int, 1, 65535), default=8000, help="TCP port (default 8000)")
    sp.add_argument("--artifact", action="append", help="serve this artifact (file name or format:recipe) instead of the shipped one")
    sp.add_argument("--workers", type=bounded(int, 1, 1024), default=None, help="interpreters in the pool (default: this device's cores)")
    sp.add_argument("--threads", type=bounded(int, 1, 1024), default=None, help="threads per interpreter (default: the profile's threads / workers)")
    sp.add_argument("--batch-ms", type=bounded(float, 0, 10_000), default=0.0, help="dynamic batching: requests arriving within this many ms share one invoke (default 0: off)")
    sp.add_argument("--max-batch", type=bounded(int, 1, 100_000), default=MAX_BATCH, help=f"largest batch one request or one shared invoke may hold (default {MAX_BATCH})")
    sp.add_argument("--max-body-mb", type=bounded(float, 0.001, 65_536), default=MAX_BODY_MB, help=f"largest request body in MiB (default {MAX_BODY_MB:g})")
    sp.add_argument("--token-file", default=None, help="require 'Authorization: Bearer TOKEN' with the token in this file (or set $EDGESHIP_SERVE_TOKEN)")
    sp.add_argument("--install-service", action="store_true", help="print a systemd unit that runs this serve command at boot (--yes installs and starts it)")
    sp.add_argument("--yes", action="store_true", help="with --install-service: write the unit and start it with systemctl")
    sp.add_argument("--unit-dir", default="/etc/systemd/system", help="where --install-service --yes writes the unit (default /etc/systemd/system)")
    sp.add_argument("--json", default=None, help=argparse.SUPPRESS)
    sp.set_defaults(func=cmd_serve)
