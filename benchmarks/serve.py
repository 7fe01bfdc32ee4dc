"""Benchmark of `dlapps serve`: requests/s and p50/p99 latency per app and client count, against
direct calls of the same SavedModel signature in this process (the ceiling), same run.

    python benchmarks/serve.py [--models saved_models] [--clients 1,8,32] [--seconds 20] [--apps sentiment]

Every client sends one instance per request on its own kept-alive connection: the case
server-side batching is for. Each figure is measured twice, against `dlapps serve` as it starts
by default (batching on) and against a second server started with --no-batching.
When --models holds no exported sentiment model, the demo one is trained and exported first.
Ends with one JSON line of figures.
"""

from __future__ import annotations

import argparse
import http.client
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
    """`clients` threads, each on its own kept-alive connection (as requests.Session and TF
    Serving's clients keep theirs), sending one request after another for `seconds`."""
    data = json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    latencies: list[float] = []
    errors = [0]
    deadline = time.perf_counter() + seconds
    lock = threading.Lock()

    def client():
        mine = []
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                connection.request("POST", path, body=data, headers=headers)
                response = connection.getresponse()
                response.read()
                if response.status != 200:
                    raise RuntimeError(response.status)
                mine.append(time.perf_counter() - started)
            except Exception:
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                with lock:
                    errors[0] += 1
        connection.close()
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


class Server:
    """`dlapps serve` in a subprocess on a free port, stopped with SIGTERM."""

    def __init__(self, models: Path, log_path: Path, *extra: str):
        self.port = free_port()
        self.log = open(log_path, "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dlapps.apps", "serve", "--models", str(models), "--port", str(self.port), *extra],
            stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        for _ in range(900):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1).read()
                return
            except OSError:
                if self.process.poll() is not None:
                    raise SystemExit(f"dlapps serve exited: see {log_path}")
                time.sleep(0.2)
        raise SystemExit("dlapps serve did not start")

    def get(self, path: str) -> dict:
        return json.loads(urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}").read())

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)
        self.log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="", help="folder of exported run folders (default: a temporary one with the demo sentiment model)")
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--apps", default="", help="comma-separated apps to load (default: all with a text or word input)")
    parser.add_argument("--max-concurrency", type=int, default=4, help="dlapps serve --max-concurrency")
    parser.add_argument("--no-unbatched", action="store_true", help="skip the comparison with a server started with --no-batching")
    args = parser.parse_args()

    scratch = tempfile.TemporaryDirectory()
    models = Path(args.models or scratch.name)
    ensure_sentiment(models)
    common = ("--max-concurrency", str(args.max_concurrency))
    servers = {"batching": Server(models, Path(scratch.name) / "serve.log", *common)}
    if not args.no_unbatched:
        servers["no batching"] = Server(models, Path(scratch.name) / "serve-unbatched.log", *common, "--no-batching")
    results = []
    try:
        names = servers["batching"].get("/healthz")["models"]
        wanted = [a for a in args.apps.split(",") if a] or names
        for name in wanted:
            meta = servers["batching"].get(f"/v1/models/{name}/metadata")
            signature = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
            body = request_body(signature)
            if body is None:
                print(f"{name}: skipped (no sample for its inputs {sorted(signature['inputs'])})")
                continue
            version = meta["model_spec"]["version"]
            for clients in [int(c) for c in args.clients.split(",")]:
                ceiling = direct(models / name / "serving" / version, body, clients, args.seconds)
                row = {"app": name, "clients": clients, "direct_calls_per_second": ceiling["calls_per_second"]}
                for label, server in servers.items():
                    served = load(server.port, f"/v1/models/{name}:predict", body, clients, args.seconds)
                    prefix = "" if label == "batching" else "unbatched_"
                    row.update({prefix + k: v for k, v in served.items()})
                    row[prefix + "share_of_direct"] = round(served["requests_per_second"] / ceiling["calls_per_second"], 3)
                    print(f"{name:<10} clients {clients:>3} {label:<12}: {served['requests_per_second']:>8.1f} req/s  "
                          f"p50 {served['p50_ms']:>7.1f} ms  p99 {served['p99_ms']:>7.1f} ms  errors {served['errors']}   "
                          f"direct {ceiling['calls_per_second']:>8.1f} calls/s ({row[prefix + 'share_of_direct']:.0%})", flush=True)
                results.append(row)
    finally:
        for server in servers.values():
            server.stop()
    headline = next((r for r in results if r["app"] == "sentiment" and r["clients"] == 8), results[0] if results else {})
    print(json.dumps({
        "app": "serve", "data": "sentiment demo" if not args.models else str(models), "metric": "requests_per_second (8 clients, sentiment)",
        "value": headline.get("requests_per_second"), "peer": "direct SavedModel calls, same threads",
        "peer_value": headline.get("direct_calls_per_second"), "p99_ms": headline.get("p99_ms"),
        "share_of_direct": headline.get("share_of_direct"), "unbatched_requests_per_second": headline.get("unbatched_requests_per_second"),
        "unbatched_share_of_direct": headline.get("unbatched_share_of_direct"), "train_seconds": None, "rows": results,
    }))


if __name__ == "__main__":
    main()
