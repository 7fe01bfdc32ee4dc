"""Benchmark of `dlapps serve`: requests/s and p50/p99 latency per app and client count, against
direct calls of the same SavedModel signature in this process (the ceiling), same run.

    python benchmarks/serve.py [--models saved_models] [--clients 1,8,32] [--seconds 20] [--apps sentiment]

Every client sends one instance per request (the worst case for a server: no batching helps).
When --models holds no exported sentiment model, the demo one is trained and exported first.
Ends with one JSON line of figures.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

# One instance per app, by the name of its serving_default input.
SAMPLES = {
    "text": "the acting was superb and the plot was gripping",
    "word": "the",
    "prompt": "The ",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request_body(signature: dict) -> dict | None:
    instance = {}
    for name, info in signature["inputs"].items():
        if name in SAMPLES:
            instance[name] = SAMPLES[name]
        elif info["dtype"] in ("DT_INT32", "DT_INT64") and name == "length":
            instance[name] = 20
        elif info["dtype"] == "DT_FLOAT" and name == "temperature":
            instance[name] = 0.8
        else:
            return None  # an input this benchmark has no sample for (images, audio): skipped
    return {"instances": [instance if len(instance) > 1 else next(iter(instance.values()))]}


def load(port: int, path: str, body: dict, clients: int, seconds: float) -> dict:
    data = json.dumps(body).encode()
    latencies: list[float] = []
    errors = [0]
    deadline = time.perf_counter() + seconds
    lock = threading.Lock()

    def client():
        mine = []
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method="POST")
                with urllib.request.urlopen(request, timeout=60) as response:
                    response.read()
                mine.append(time.perf_counter() - started)
            except Exception:
                with lock:
                    errors[0] += 1
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return {"requests_per_second": round(len(latencies) / elapsed, 1), "p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p99_ms": round(float(np.percentile(ms, 99)), 1), "errors": errors[0], "requests": len(latencies)}


def direct(path: Path, body: dict, clients: int, seconds: float) -> dict:
    """The same signature called in this process, `clients` threads, one instance a call."""
    import tensorflow as tf

    function = tf.saved_model.load(str(path)).signatures["serving_default"]
    specs = function.structured_input_signature[1]
    instance = body["instances"][0]
    values = instance if isinstance(instance, dict) else {next(iter(specs)): instance}
    tensors = {k: tf.constant([v], dtype=specs[k].dtype) for k, v in values.items()}
    function(**tensors)
    counts = [0] * clients
    deadline = time.perf_counter() + seconds

    def worker(i):
        while time.perf_counter() < deadline:
            function(**tensors)
            counts[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"calls_per_second": round(sum(counts) / (time.perf_counter() - started), 1)}


def ensure_sentiment(models: Path) -> None:
    if list((models / "sentiment" / "serving").glob("*/saved_model.pb")):
        return
    print("no exported sentiment model in", models, "- training and exporting the demo one", flush=True)
    for command in (["train", "--out", str(models / "sentiment")], ["export", "-m", str(models / "sentiment")]):
        subprocess.run([sys.executable, "-m", "dlapps.apps", "sentiment", *command], check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="", help="folder of exported run folders (default: a temporary one with the demo sentiment model)")
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--apps", default="", help="comma-separated apps to load (default: all with a text or word input)")
    parser.add_argument("--max-concurrency", type=int, default=4, help="dlapps serve --max-concurrency")
    args = parser.parse_args()

    scratch = tempfile.TemporaryDirectory()
    models = Path(args.models or scratch.name)
    ensure_sentiment(models)
    port = free_port()
    log = open(Path(scratch.name) / "serve.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "dlapps.apps", "serve", "--models", str(models), "--port", str(port),
                               "--max-concurrency", str(args.max_concurrency)],
                              stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
                break
            except OSError:
                time.sleep(0.2)
        names = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz").read())["models"]
        wanted = [a for a in args.apps.split(",") if a] or names
        results = []
        for name in wanted:
            meta = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models/{name}/metadata").read())
            signature = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
            body = request_body(signature)
            if body is None:
                print(f"{name}: skipped (no sample for its inputs {sorted(signature['inputs'])})")
                continue
            version = meta["model_spec"]["version"]
            for clients in [int(c) for c in args.clients.split(",")]:
                served = load(port, f"/v1/models/{name}:predict", body, clients, args.seconds)
                ceiling = direct(models / name / "serving" / version, body, clients, args.seconds)
                row = {"app": name, "clients": clients, **served, "direct_calls_per_second": ceiling["calls_per_second"],
                       "share_of_direct": round(served["requests_per_second"] / ceiling["calls_per_second"], 3)}
                results.append(row)
                print(f"{name:<10} clients {clients:>3}: {served['requests_per_second']:>8.1f} req/s  p50 {served['p50_ms']:>7.1f} ms  "
                      f"p99 {served['p99_ms']:>7.1f} ms  errors {served['errors']}   direct {ceiling['calls_per_second']:>8.1f} calls/s "
                      f"({row['share_of_direct']:.0%})", flush=True)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        log.close()
    headline = next((r for r in results if r["app"] == "sentiment" and r["clients"] == 8), results[0] if results else {})
    print(json.dumps({
        "app": "serve", "data": "sentiment demo" if not args.models else str(models), "metric": "requests_per_second (8 clients, sentiment)",
        "value": headline.get("requests_per_second"), "peer": "direct SavedModel calls, same threads",
        "peer_value": headline.get("direct_calls_per_second"), "p99_ms": headline.get("p99_ms"),
        "share_of_direct": headline.get("share_of_direct"), "train_seconds": None, "rows": results,
        "server_side_batching": "not implemented",
    }))


if __name__ == "__main__":
    main()
