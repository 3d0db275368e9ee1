"""A user's client of `serve`: Triton's own Open Inference Protocol client (tritonclient[http]), run in
its own venv (numpy + tritonclient only: no edgeship, no runtime), as a team that already has one would.

python serve_client.py URL MODEL INPUTS.npz OUT.npz [--token T] [--json] [--chunk N] [--concurrency C]
Sends INPUTS (every array but __labels__) in requests of CHUNK samples (C at once with async_infer),
writes the outputs to OUT.npz and prints {"live", "ready", "model_ready", "metadata"} as JSON.
A failed call prints {"error": message, "status": HTTP status} and exits 3.
"""
import argparse
import json
import sys

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("model")
    p.add_argument("inputs")
    p.add_argument("out")
    p.add_argument("--token", default=None)
    p.add_argument("--json", action="store_true", help="JSON tensors instead of the binary tensor data extension")
    p.add_argument("--chunk", type=int, default=1)
    p.add_argument("--concurrency", type=int, default=1)
    a = p.parse_args()
    headers = {"Authorization": f"Bearer {a.token}"} if a.token else None
    client = httpclient.InferenceServerClient(url=a.url, concurrency=a.concurrency)
    try:
        info = {
            "live": client.is_server_live(),
            "ready": client.is_server_ready(),
            "model_ready": client.is_model_ready(a.model, headers=headers),
            "metadata": client.get_model_metadata(a.model, headers=headers),
        }
        with np.load(a.inputs) as z:
            feed = {k: z[k].astype(np.float32) for k in z.files if k != "__labels__"}
        n = len(next(iter(feed.values())))
        outs = [o["name"] for o in info["metadata"]["outputs"]]
        pending = []
        for start in range(0, n, a.chunk):
            ins = []
            for name, x in feed.items():
                part = x[start : start + a.chunk]
                t = httpclient.InferInput(name, list(part.shape), "FP32")
                t.set_data_from_numpy(part, binary_data=not a.json)
                ins.append(t)
            req = [httpclient.InferRequestedOutput(o, binary_data=not a.json) for o in outs]
            pending.append(client.async_infer(a.model, ins, outputs=req, headers=headers))
        results = [r.get_result() for r in pending]
        np.savez(a.out, **{o: np.concatenate([r.as_numpy(o) for r in results]) for o in outs})
    except InferenceServerException as e:
        print(json.dumps({"error": e.message(), "status": e.status()}))
        return 3
    finally:
        client.close()
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
