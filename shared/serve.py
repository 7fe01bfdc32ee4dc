"""`dlapps serve`: TensorFlow Serving's REST API over every SavedModel that `export` wrote.

The same JSON as TF Serving (tensorflow_serving/g3doc/api_rest.md), so one client works against
both: ``GET /v1/models/NAME[/versions/V][/metadata]`` and
``POST /v1/models/NAME[/versions/V]:predict`` with ``{"signature_name"?, "instances": [...]}``
(row format, answered ``{"predictions": ...}``) or ``{"inputs": ...}`` (columnar, answered
``{"outputs": ...}``), binary values as ``{"b64": "..."}``, errors as ``{"error": "..."}``.
Plus ``GET /healthz``, Prometheus ``GET /metrics`` and a try-it page at ``GET /``.

Models are found as ``MODELS/NAME/serving/VERSION/saved_model.pb``; the highest version answers
by default and is reloaded when a new one appears (the old one keeps answering until the new one
has loaded, so no request is dropped). Older versions load on their first request by URL.
Requests are bounded in body size, batch size, time and concurrency; SIGTERM lets requests in
flight finish (uvicorn's graceful shutdown).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from dlapps.shared.config import Options, option

log = logging.getLogger("dlapps.serve")


@dataclass
class ServeOptions(Options):
    """The options of `dlapps serve`, typed and bounded like every other command's."""

    models: str = option("saved_models", "folder of run folders; each NAME/serving/VERSION/ is served as model NAME")
    host: str = option("127.0.0.1", "address to listen on (0.0.0.0: every interface)")
    port: int = option(8501, "port of the REST API (TF Serving's is 8501)", min=1, max=65535)
    workers: int = option(1, "server processes, each with its own copy of the models", min=1, max=64)
    max_body_mb: float = option(32.0, "largest request body accepted, in MiB", above=0, max=4096)
    max_batch: int = option(1024, "most instances in one request", min=1, max=1_000_000)
    timeout: float = option(30.0, "seconds a request may take, waiting included", above=0, max=3600)
    max_concurrency: int = option(4, "model calls running at once per process", min=1, max=256)
    poll_seconds: float = option(2.0, "how often the models folder is checked for new versions", above=0, max=3600)
    batching: bool = option(True, "join requests that arrive while a signature is busy into one model call (TF Serving's --enable_batching)")
    batch_rows: int = option(256, "most rows in one joined call", min=1, max=1_000_000)

    def limits(self) -> "Limits":
        return Limits(int(self.max_body_mb * 1024 * 1024), self.max_batch, self.timeout, self.max_concurrency, self.poll_seconds,
                      self.batching, self.batch_rows)


@dataclass
class Limits:
    max_body_bytes: int = 32 * 1024 * 1024  # an encoded image or a few seconds of audio fit many times
    max_batch: int = 1024  # instances (or rows of a columnar input) per request
    timeout_seconds: float = 30.0  # per request, queueing included
    max_concurrency: int = 4  # model calls running at once; more requests wait their turn
    poll_seconds: float = 2.0  # how often the models folder is checked for new versions
    batching: bool = True  # concurrent requests to one signature share model calls
    batch_rows: int = 256  # most rows in one joined call


class RequestError(Exception):
    """A bad request: answered as {"error": message} with `status`, never a crash."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


# --- the models folder -----------------------------------------------------------------------------


@dataclass
class Servable:
    """One loaded SavedModel version."""

    name: str
    version: int
    path: Path
    loaded: object = None
    signatures: dict = field(default_factory=dict)

    def load(self) -> "Servable":
        import tensorflow as tf

        self.loaded = tf.saved_model.load(str(self.path))
        self.signatures = dict(self.loaded.signatures)
        return self


def _versions_on_disk(root: Path) -> dict[str, dict[int, Path]]:
    found: dict[str, dict[int, Path]] = {}
    if not root.is_dir():
        return found
    for model_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        serving = model_dir / "serving"
        if not serving.is_dir():
            continue
        for version_dir in serving.iterdir():
            if version_dir.name.isdigit() and (version_dir / "saved_model.pb").exists():
                found.setdefault(model_dir.name, {})[int(version_dir.name)] = version_dir
    return found


class Repository:
    """The servables of a models folder: the latest version of each loaded, the rest on demand."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._lock = threading.Lock()
        self._on_disk: dict[str, dict[int, Path]] = {}
        self._loaded: dict[tuple[str, int], Servable] = {}
        self._failed: dict[tuple[str, int], str] = {}
        self._stop = threading.Event()

    def refresh(self) -> None:
        """Reads the folder; loads every model's newest version that is not loaded yet. A new
        version is loaded before it replaces the old one in the map: requests never wait."""
        on_disk = _versions_on_disk(self.root)
        for name, versions in on_disk.items():
            newest = max(versions)
            key = (name, newest)
            if key not in self._loaded and key not in self._failed:
                try:
                    servable = Servable(name, newest, versions[newest]).load()
                except Exception as error:  # a half-copied or broken export: reported, not served
                    self._failed[key] = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
                    log.warning("could not load %s version %s: %s", name, newest, self._failed[key])
                    continue
                with self._lock:
                    self._loaded[key] = servable
                log.info("serving %s version %s from %s", name, newest, versions[newest])
        with self._lock:
            self._on_disk = on_disk
            for key in [k for k in self._loaded if k[1] not in on_disk.get(k[0], {})]:
                del self._loaded[key]  # its folder is gone

    def watch(self, seconds: float) -> threading.Thread:
        def loop():
            while not self._stop.wait(seconds):
                try:
                    self.refresh()
                except Exception:  # a folder vanishing mid-scan: the next poll sees it right
                    log.exception("models folder scan failed")

        thread = threading.Thread(target=loop, name="dlapps-serve-watch", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._on_disk)

    def versions(self, name: str) -> dict[int, Path]:
        with self._lock:
            if name not in self._on_disk:
                raise RequestError(f"Servable not found for request: Latest({name})", 404)
            return dict(self._on_disk[name])

    def get(self, name: str, version: int | None = None) -> Servable:
        versions = self.versions(name)
        version = max(versions) if version is None else version
        if version not in versions:
            raise RequestError(f"Servable not found for request: Specific({name}, {version})", 404)
        key = (name, version)
        with self._lock:
            servable = self._loaded.get(key)
        if servable is None:
            if key in self._failed:
                raise RequestError(f"{name} version {version} could not be loaded: {self._failed[key]}", 503)
            servable = Servable(name, version, versions[version]).load()
            with self._lock:
                self._loaded[key] = servable
        return servable

    def loaded(self, name: str, version: int | None = None) -> Servable | None:
        """The servable if it is loaded already (no I/O, so the event loop may ask); else None."""
        with self._lock:
            versions = self._on_disk.get(name)
            if not versions:
                return None
            return self._loaded.get((name, max(versions) if version is None else version))

    def status(self, name: str, version: int | None = None) -> dict:
        versions = self.versions(name)
        if version is not None and version not in versions:
            raise RequestError(f"Servable not found for request: Specific({name}, {version})", 404)
        chosen = [version] if version is not None else sorted(versions, reverse=True)
        rows = []
        for v in chosen:
            with self._lock:
                loaded = (name, v) in self._loaded
            failed = self._failed.get((name, v))
            state = "AVAILABLE" if loaded else ("END" if failed else "LOADING" if v == max(versions) else "AVAILABLE")
            rows.append({
                "version": str(v),
                "state": state,
                "status": {"error_code": "UNKNOWN" if failed else "OK", "error_message": failed or ""},
            })
        return {"model_version_status": rows}


# --- signatures and tensors ------------------------------------------------------------------------

_DTYPE_NAMES = {"string": "DT_STRING", "float32": "DT_FLOAT", "float64": "DT_DOUBLE", "int32": "DT_INT32",
                "int64": "DT_INT64", "bool": "DT_BOOL", "uint8": "DT_UINT8", "int8": "DT_INT8", "int16": "DT_INT16",
                "uint16": "DT_UINT16", "half": "DT_HALF", "float16": "DT_HALF", "bfloat16": "DT_BFLOAT16"}


def _tensor_info(spec, tensor_name: str) -> dict:
    shape = spec.shape
    info = {"dtype": _DTYPE_NAMES.get(spec.dtype.name, spec.dtype.name.upper()), "name": tensor_name}
    if shape.rank is None:
        info["tensor_shape"] = {"dim": [], "unknown_rank": True}
    else:
        info["tensor_shape"] = {"dim": [{"size": str(-1 if d is None else d), "name": ""} for d in shape.as_list()],
                                "unknown_rank": False}
    return info


def signature_def(function) -> dict:
    """A signature in TF Serving's metadata JSON (SignatureDef as JSON)."""
    inputs = function.structured_input_signature[1]
    outputs = function.structured_outputs
    return {
        "inputs": {name: _tensor_info(spec, f"serving_default_{name}:0") for name, spec in sorted(inputs.items())},
        "outputs": {name: _tensor_info(spec, f"StatefulPartitionedCall:{i}") for i, (name, spec) in enumerate(sorted(outputs.items()))},
        "method_name": "tensorflow/serving/predict",
    }


def metadata(servable: Servable) -> dict:
    return {
        "model_spec": {"name": servable.name, "signature_name": "", "version": str(servable.version)},
        "metadata": {"signature_def": {
            "signature_def": {name: signature_def(function) for name, function in sorted(servable.signatures.items())},
        }},
    }


def _decode_binary(value):
    """{"b64": "..."} anywhere in a nested list becomes bytes, as TF Serving does."""
    if isinstance(value, dict):
        if set(value) == {"b64"} and isinstance(value["b64"], str):
            try:
                return base64.b64decode(value["b64"], validate=True)
            except ValueError:
                raise RequestError("a {\"b64\": ...} value is not valid base64")
        raise RequestError(f"unexpected object {json.dumps(value)[:80]} in a tensor value (only {{\"b64\": ...}} is allowed)")
    if isinstance(value, list):
        return [_decode_binary(v) for v in value]
    return value


def _to_tensor(name: str, value, spec, max_batch: int):
    import numpy as np
    import tensorflow as tf

    value = _decode_binary(value)
    try:
        if spec.dtype == tf.string:
            array = np.array(value, dtype=object)
            flat = array.reshape(-1) if array.ndim else [array.item()]
            if not all(isinstance(v, (str, bytes)) for v in flat):
                raise ValueError("expected strings")
            tensor = tf.constant(array.tolist() if array.ndim else array.item(), dtype=tf.string)
        else:
            array = np.array(value)
            if array.dtype == object or array.dtype.kind in "USO":
                raise ValueError("expected numbers")
            if spec.dtype.is_integer and array.dtype.kind == "f" and not np.all(np.mod(array, 1) == 0):
                raise ValueError("expected integers")
            tensor = tf.constant(array, dtype=spec.dtype)
    except (ValueError, TypeError, OverflowError) as error:
        raise RequestError(f"input '{name}': cannot be a {spec.dtype.name} tensor ({str(error).splitlines()[0][:120]})")
    if not spec.shape.is_compatible_with(tensor.shape):
        raise RequestError(f"input '{name}': shape {tensor.shape.as_list()} does not fit the signature's {spec.shape}")
    if tensor.shape.rank and tensor.shape[0] > max_batch:
        raise RequestError(f"input '{name}': a batch of {tensor.shape[0]} is over the limit of {max_batch}")
    return tensor


def _plain(array):
    """An array as JSON values: numbers, UTF-8 strings, or {"b64": ...} for other bytes."""

    def convert(value):
        if isinstance(value, bytes):
            try:
                return value.decode("utf-8")
            except UnicodeDecodeError:
                return {"b64": base64.b64encode(value).decode("ascii")}
        return value

    if array.dtype == object:
        if array.ndim == 0:
            return convert(array.item())
        return [_plain_list(row, convert) for row in array] if array.ndim > 1 else [convert(v) for v in array]
    return array.tolist()


def _plain_list(array, convert):
    if array.ndim == 1:
        return [convert(v) for v in array]
    return [_plain_list(row, convert) for row in array]


@dataclass
class ParsedRequest:
    """A :predict body checked against its signature: the tensors to call it with."""

    signature: str
    function: object
    tensors: dict
    columnar: bool

    def rows(self) -> int | None:
        """The shared batch size of the inputs, or None when they have none (scalars, mismatches)."""
        specs = self.function.structured_input_signature[1]
        sizes = {t.shape[0] if t.shape.rank else None for t in self.tensors.values()}
        if len(sizes) != 1 or None in sizes or any(not s.shape.rank or s.shape[0] is not None for s in specs.values()):
            return None
        return sizes.pop() or None


def parse_request(servable: Servable, body, limits: Limits) -> ParsedRequest:
    """Either format of a :predict body, checked against the signature and turned into tensors."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object with \"instances\" or \"inputs\"")
    name = body.get("signature_name", "serving_default") or "serving_default"
    if name not in servable.signatures:
        raise RequestError(f"Serving signature name: \"{name}\" not found in signature def "
                           f"(have: {', '.join(sorted(servable.signatures))})")
    function = servable.signatures[name]
    specs = function.structured_input_signature[1]
    if ("instances" in body) == ("inputs" in body):
        raise RequestError("the request must have exactly one of \"instances\" (row format) or \"inputs\" (columnar format)")
    if "instances" in body:
        instances = body["instances"]
        if not isinstance(instances, list) or not instances:
            raise RequestError("\"instances\" must be a non-empty list")
        if len(instances) > limits.max_batch:
            raise RequestError(f"{len(instances)} instances are over the limit of {limits.max_batch}")
        if all(isinstance(i, dict) and "b64" not in i for i in instances):
            columns = {}
            for key in specs:
                if any(key not in i for i in instances):
                    raise RequestError(f"every instance needs input '{key}' (the signature's inputs: {', '.join(sorted(specs))})")
                columns[key] = [i[key] for i in instances]
            extra = {k for i in instances for k in i} - set(specs)
            if extra:
                raise RequestError(f"unknown input(s) {', '.join(sorted(extra))} (the signature's inputs: {', '.join(sorted(specs))})")
        elif len(specs) == 1:
            columns = {next(iter(specs)): instances}
        else:
            raise RequestError(f"this signature has several inputs ({', '.join(sorted(specs))}): give each instance as an object")
    else:
        inputs = body["inputs"]
        if isinstance(inputs, dict) and not (set(inputs) == {"b64"}):
            columns = dict(inputs)
            missing, extra = set(specs) - set(columns), set(columns) - set(specs)
            if missing or extra:
                raise RequestError(f"inputs must be exactly {', '.join(sorted(specs))} (missing: {', '.join(sorted(missing)) or '-'}, "
                                   f"unknown: {', '.join(sorted(extra)) or '-'})")
        elif len(specs) == 1:
            columns = {next(iter(specs)): inputs}
        else:
            raise RequestError(f"this signature has several inputs ({', '.join(sorted(specs))}): give \"inputs\" as an object")
    tensors = {key: _to_tensor(key, value, specs[key], limits.max_batch) for key, value in columns.items()}
    return ParsedRequest(name, function, tensors, "inputs" in body)


def call_signature(function, tensors: dict) -> dict:
    """The signature's outputs as numpy arrays; the graph's own refusals become a RequestError."""
    try:
        outputs = function(**tensors)
    except Exception as error:  # the graph's own checks (tf.debugging.assert_*) and shape errors
        raise RequestError(f"the model refused the input: {_reason(error)[:300]}")
    return {key: value.numpy() for key, value in outputs.items()}


def _reason(error: Exception) -> str:
    """The line of a TensorFlow error that says what was wrong, not where the graph failed."""
    noise = ("Graph execution error", "Detected at node", "<stack traces unavailable>", "[[")
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    telling = [line for line in lines if not line.startswith(noise)]
    return (telling or lines or [type(error).__name__])[0]


def format_answer(outputs: dict, columnar: bool) -> dict:
    """TF Serving's answer: {"outputs": ...} for columnar requests, {"predictions": ...} for rows
    (a list of objects when there are several named outputs, plain values when there is one)."""
    plain = {key: _plain(value) for key, value in outputs.items()}
    if columnar:
        return {"outputs": next(iter(plain.values())) if len(plain) == 1 else plain}
    if len(plain) == 1:
        return {"predictions": next(iter(plain.values()))}
    sizes = {key: len(value) if isinstance(value, list) else None for key, value in plain.items()}
    if len(set(sizes.values())) != 1 or None in sizes.values():
        raise RequestError(f"the outputs have different batch sizes {sizes}: use the columnar \"inputs\" format")
    count = next(iter(sizes.values()))
    return {"predictions": [{key: value[i] for key, value in plain.items()} for i in range(count)]}


def predict(servable: Servable, body, limits: Limits) -> dict:
    """One :predict request on `servable`, on its own: parsed, run, answered in its format."""
    request = parse_request(servable, body, limits)
    return format_answer(call_signature(request.function, request.tensors), request.columnar)


# --- server-side batching --------------------------------------------------------------------------

# Batches of one signature running at once: while one runs the next gathers, and two running keep
# both cores of a small machine busy (measured in benchmarks/serve.py: 1 was slower at 8 clients).
BATCHES_AT_ONCE = 2


@dataclass
class _Waiting:
    request: ParsedRequest
    rows: int
    future: object
    servable: Servable  # held so that the servable (and the id in the queue key) outlives the wait


class Batcher:
    """Server-side batching, as TF Serving's ``--enable_batching``: requests to one signature that
    arrive while it is busy wait, and the next call takes them all as one batch (up to `max_rows`
    rows), so concurrent clients share model calls. An idle signature answers at once, on the
    request's own coroutine: a lone client pays no batching delay. Only signatures whose inputs and outputs all have a batch
    dimension (and outputs a fixed size beyond it) are joined, and only requests whose tensors
    have the same shape beyond it; if a
    joined call fails (one request's input refused by the graph), each request runs on its own so
    the error reaches only its sender."""

    def __init__(self, slots: asyncio.Semaphore, max_rows: int, parallel: int = BATCHES_AT_ONCE, observe=None):
        self.slots = slots  # the server's bound on model calls running at once
        self.max_rows = max_rows
        self.parallel = parallel  # batches of one signature running at once
        self.observe = observe or (lambda requests, rows: None)  # told the size of every joined call
        self.queues: dict[tuple, "collections.deque[_Waiting]"] = {}
        self.running: dict[tuple, int] = {}
        self.tasks: set = set()

    @staticmethod
    def splittable_outputs(request: ParsedRequest) -> bool:
        """Outputs with a batch dimension and a fixed size beyond it: a variable size (detections,
        generated images up to the longest count) would be padded to the longest row of the joined
        call, so a request's answer would depend on its neighbours."""
        return all(s.shape.rank and s.shape[0] is None and None not in s.shape.as_list()[1:]
                   for s in request.function.structured_outputs.values())

    async def answer(self, servable: Servable, request: ParsedRequest) -> dict:
        from starlette.concurrency import run_in_threadpool

        rows = request.rows()  # None: inputs without a shared batch dimension
        if rows is None or not self.splittable_outputs(request):
            async with self.slots:
                return await run_in_threadpool(predict_parsed, request)
        key = (id(servable), request.signature,
               tuple(sorted((k, t.dtype.name, tuple(t.shape[1:])) for k, t in request.tensors.items())))
        queue = self.queues.setdefault(key, collections.deque())
        if not queue and self.running.get(key, 0) < self.parallel:
            # Idle: answered on this coroutine, with no hand-off to a batching task (which cost a
            # lone client 13% of its requests/s in benchmarks/serve.py).
            self.running[key] = self.running.get(key, 0) + 1
            try:
                self.observe(1, rows)
                async with self.slots:
                    return await run_in_threadpool(predict_parsed, request)
            finally:
                self._finished(key)
        future = asyncio.get_running_loop().create_future()
        queue.append(_Waiting(request, rows, future, servable))
        if self.running.get(key, 0) < self.parallel:
            self._start(key)
        return await future

    def _start(self, key: tuple) -> None:
        self.running[key] = self.running.get(key, 0) + 1
        task = asyncio.create_task(self._drain(key))
        self.tasks.add(task)  # a reference, or the task could be collected mid-run
        task.add_done_callback(self.tasks.discard)

    def _finished(self, key: tuple) -> None:
        """A call of `key` ended: requests that queued meanwhile get a batching task."""
        self.running[key] -= 1
        queue = self.queues.get(key)
        if queue and self.running[key] < self.parallel:
            self._start(key)
        if not self.running[key]:
            del self.running[key]
            if not queue:
                self.queues.pop(key, None)

    async def _drain(self, key: tuple) -> None:
        from starlette.concurrency import run_in_threadpool

        queue = self.queues[key]
        try:
            while queue:
                batch, rows = [], 0
                while queue and (not batch or rows + queue[0].rows <= self.max_rows):
                    waiting = queue.popleft()
                    if not waiting.future.done():  # a request that timed out meanwhile is not run
                        batch.append(waiting)
                        rows += waiting.rows
                if not batch:
                    continue
                self.observe(len(batch), rows)
                try:
                    async with self.slots:
                        answers = await run_in_threadpool(_run_batch, batch)
                except Exception as failure:  # never leave a client waiting
                    answers = [failure] * len(batch)
                for waiting, answer in zip(batch, answers):
                    if not waiting.future.done():
                        if isinstance(answer, Exception):
                            waiting.future.set_exception(answer)
                        else:
                            waiting.future.set_result(answer)
        finally:
            self._finished(key)


def predict_parsed(request: ParsedRequest) -> dict:
    return format_answer(call_signature(request.function, request.tensors), request.columnar)


def _run_batch(batch: list[_Waiting]) -> list:
    """Answers (or RequestErrors) for `batch`, from one joined call when it can be split by rows."""
    import tensorflow as tf

    def alone(waiting):
        try:
            return predict_parsed(waiting.request)
        except RequestError as error:
            return error

    if len(batch) == 1:
        return [alone(batch[0])]
    total = sum(w.rows for w in batch)
    tensors = {key: tf.concat([w.request.tensors[key] for w in batch], 0) for key in batch[0].request.tensors}
    try:
        outputs = call_signature(batch[0].request.function, tensors)
    except RequestError:
        return [alone(w) for w in batch]
    if not all(value.ndim and value.shape[0] == total for value in outputs.values()):
        return [alone(w) for w in batch]
    answers, start = [], 0
    for waiting in batch:
        part = {key: value[start:start + waiting.rows] for key, value in outputs.items()}
        start += waiting.rows
        try:
            answers.append(format_answer(part, waiting.request.columnar))
        except RequestError as error:
            answers.append(error)
    return answers


# --- the ASGI application --------------------------------------------------------------------------


def create_app(models: str | Path, limits: Limits | None = None, watch: bool = True):
    """The Starlette application serving `models` (a folder of run folders)."""
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
    from prometheus_client import CONTENT_TYPE_LATEST
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, Response
    from starlette.routing import Route

    from dlapps.shared.runtime import import_tensorflow

    import_tensorflow()
    limits = limits or Limits()
    repository = Repository(models)
    registry = CollectorRegistry()
    requests_total = Counter("dlapps_requests", "Requests by model, method and HTTP status", ["model", "method", "code"], registry=registry)
    latency = Histogram("dlapps_request_seconds", "Request latency by model and method", ["model", "method"], registry=registry,
                        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
    slots = asyncio.Semaphore(limits.max_concurrency)
    batch_sizes = Histogram("dlapps_batch_requests", "Requests joined into one model call by server-side batching", registry=registry,
                            buckets=(1, 2, 4, 8, 16, 32, 64, 128))

    def observe(requests: int, rows: int) -> None:
        batch_sizes.observe(requests)

    batcher = Batcher(slots, limits.batch_rows, observe=observe) if limits.batching else None

    def error(message: str, status: int) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    async def answered(request: Request, method: str, work) -> Response:
        model = request.path_params.get("name", "-")
        started = time.perf_counter()
        try:
            response = JSONResponse(await work())
        except RequestError as failure:
            response = error(str(failure), failure.status)
        except asyncio.TimeoutError:
            response = error(f"the request took over {limits.timeout_seconds:g} s", 504)
        except Exception as failure:  # never a crash or a hung worker
            log.exception("request failed")
            response = error(f"internal error: {type(failure).__name__}", 500)
        requests_total.labels(model, method, str(response.status_code)).inc()
        latency.labels(model, method).observe(time.perf_counter() - started)
        return response

    def version_of(request: Request) -> int | None:
        version = request.path_params.get("version")
        if version is None:
            return None
        if not version.isdigit():
            raise RequestError(f"version must be a whole number, got {version!r}", 400)
        return int(version)

    async def status(request: Request) -> Response:
        async def work():
            return repository.status(request.path_params["name"], version_of(request))

        return await answered(request, "status", work)

    async def model_metadata(request: Request) -> Response:
        async def work():
            servable = await run_in_threadpool(repository.get, request.path_params["name"], version_of(request))
            return metadata(servable)

        return await answered(request, "metadata", work)

    async def predict_route(request: Request) -> Response:
        async def work():
            declared = request.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > limits.max_body_bytes:
                raise RequestError(f"the body of {declared} bytes is over the limit of {limits.max_body_bytes}", 413)
            raw = b""
            async for chunk in request.stream():
                raw += chunk
                if len(raw) > limits.max_body_bytes:
                    raise RequestError(f"the body is over the limit of {limits.max_body_bytes} bytes", 413)
            try:
                body = json.loads(raw)
            except (ValueError, UnicodeDecodeError) as failure:
                raise RequestError(f"malformed JSON: {str(failure)[:120]}")
            name, version = request.path_params["name"], version_of(request)

            async def call():
                # Small requests are parsed on the event loop: a thread hop costs more than they do.
                servable = repository.loaded(name, version) or await run_in_threadpool(repository.get, name, version)
                parsed = parse_request(servable, body, limits) if len(raw) < 65536 else \
                    await run_in_threadpool(parse_request, servable, body, limits)
                if batcher is not None:
                    return await batcher.answer(servable, parsed)
                async with slots:
                    return await run_in_threadpool(predict_parsed, parsed)

            return await asyncio.wait_for(call(), limits.timeout_seconds)

        return await answered(request, "predict", work)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "models": repository.names()})

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def page(request: Request) -> Response:
        from dlapps.shared.serve_page import render

        described = {}
        for name in repository.names():
            try:
                servable = await run_in_threadpool(repository.get, name, None)
                described[name] = {"version": servable.version, "signatures": metadata(servable)["metadata"]["signature_def"]["signature_def"]}
            except RequestError as failure:
                described[name] = {"error": str(failure)}
        return HTMLResponse(render(described))

    async def not_found(request: Request, exc) -> Response:
        return error(f"no such endpoint: {request.method} {request.url.path}", 404)

    async def not_allowed(request: Request, exc) -> Response:
        return error(f"{request.method} is not allowed on {request.url.path}", 405)

    routes = [
        Route("/", page),
        Route("/healthz", health),
        Route("/metrics", metrics),
        Route("/v1/models/{name}", status),
        Route("/v1/models/{name}/versions/{version}", status),
        Route("/v1/models/{name}/metadata", model_metadata),
        Route("/v1/models/{name}/versions/{version}/metadata", model_metadata),
        Route("/v1/models/{name}:predict", predict_route, methods=["POST"]),
        Route("/v1/models/{name}/versions/{version}:predict", predict_route, methods=["POST"]),
    ]

    async def startup():
        await run_in_threadpool(repository.refresh)
        if watch:
            repository.watch(limits.poll_seconds)

    async def shutdown():
        repository.stop()

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        await startup()
        yield
        await shutdown()

    application = Starlette(routes=routes, lifespan=lifespan, exception_handlers={404: not_found, 405: not_allowed})
    application.state.repository = repository
    return application


def app_from_environment():
    """The application for ``uvicorn --factory`` worker processes (``dlapps serve --workers N``)."""
    limits = Limits(**json.loads(os.environ.get("DLAPPS_SERVE_LIMITS", "{}")))
    return create_app(os.environ["DLAPPS_SERVE_MODELS"], limits)


def serve(models: str | Path, host: str, port: int, workers: int, limits: Limits) -> None:
    import dataclasses

    import uvicorn

    models = Path(models)
    common = dict(host=host, port=port, log_level="info", timeout_graceful_shutdown=int(limits.timeout_seconds) + 5)
    if workers > 1:  # separate processes: each loads the models and takes a share of the connections
        os.environ["DLAPPS_SERVE_MODELS"] = str(models.resolve())
        os.environ["DLAPPS_SERVE_LIMITS"] = json.dumps(dataclasses.asdict(limits))
        uvicorn.run("dlapps.shared.serve:app_from_environment", factory=True, workers=workers, **common)
    else:
        uvicorn.run(create_app(models, limits), **common)
