"""`dlapps serve`: real HTTP on loopback against exported apps, in TF Serving's JSON."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from .contract import predict_json, trained
from .helpers import QUIET_ENV, assert_ok, run_cli
from .test_sentiment import TINY as SENTIMENT_TINY
from .test_word2vec import TINY as WORD2VEC_TINY

SENTIMENT_ARGS = ("--epochs", "4", *SENTIMENT_TINY)  # the contract suite's run: trained once
WORD2VEC_ARGS = ("--epochs", "3", *WORD2VEC_TINY)
TEXTS = ["the plot was not boring", "the acting was superb", "although the cast was great, the ending felt dull"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(port: int, path: str, body=None, raw: bytes | None = None, timeout: float = 60):
    """(status, JSON answer) of one request; `body` is sent as JSON, `raw` as it is."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


class Server:
    def __init__(self, models, port, *args):
        self.port = port
        self.log = open(Path(models).parent / f"serve-{port}.log", "w")  # a file: an unread pipe would fill and stall it
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dlapps.apps", "serve", "--models", str(models), "--port", str(port), "--poll-seconds", "0.5", *args],
            stdout=self.log, stderr=subprocess.STDOUT, env=QUIET_ENV,
        )
        deadline = time.time() + 180
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited: {Path(self.log.name).read_text()[-3000:]}")
            try:
                if call(port, "/healthz", timeout=2)[0] == 200:
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError, socket.timeout):
                pass
            time.sleep(0.3)
        raise AssertionError("server did not start")

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=60)
        self.log.close()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    for app, args in (("sentiment", SENTIMENT_ARGS), ("word2vec", WORD2VEC_ARGS)):
        run_dir = trained(tmp_path_factory, app, *args)
        assert_ok(run_cli(app, "export", "-m", run_dir, "--out", folder / app))
    return folder


@pytest.fixture(scope="module")
def server(models):
    running = Server(models, _free_port())
    yield running
    running.stop()


def test_status_and_metadata_have_tf_servings_shape(server):
    status, answer = call(server.port, "/v1/models/sentiment")
    assert status == 200 and answer == {"model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
    assert call(server.port, "/v1/models/sentiment/versions/1")[1] == answer
    status, meta = call(server.port, "/v1/models/sentiment/metadata")
    assert status == 200 and meta["model_spec"] == {"name": "sentiment", "signature_name": "", "version": "1"}
    signature = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["inputs"]["text"]["dtype"] == "DT_STRING"
    assert signature["inputs"]["text"]["tensor_shape"] == {"dim": [{"size": "-1", "name": ""}], "unknown_rank": False}
    assert set(signature["outputs"]) == {"label", "probability", "probabilities"}
    assert signature["method_name"] == "tensorflow/serving/predict"


def test_each_app_answers_as_its_predict(server, tmp_path_factory):
    sentiment = predict_json("sentiment", trained(tmp_path_factory, "sentiment", *SENTIMENT_ARGS), TEXTS)
    status, rows = call(server.port, "/v1/models/sentiment:predict", {"instances": TEXTS})
    assert status == 200 and [r["label"] for r in rows["predictions"]] == [p["label"] for p in sentiment]
    assert np.allclose([r["probability"] for r in rows["predictions"]], [p["probability"] for p in sentiment], atol=1e-5)
    status, columns = call(server.port, "/v1/models/sentiment:predict", {"inputs": {"text": TEXTS}, "signature_name": "serving_default"})
    assert status == 200 and columns["outputs"]["label"] == [p["label"] for p in sentiment]
    words = predict_json("word2vec", trained(tmp_path_factory, "word2vec", *WORD2VEC_ARGS), ["true", "return"])
    status, answer = call(server.port, "/v1/models/word2vec/versions/1:predict", {"instances": [{"word": "true"}, {"word": "return"}]})
    assert status == 200
    for served, predicted in zip(answer["predictions"], words):
        assert served["neighbours"] == [n["word"] for n in predicted["neighbours"]]


@pytest.mark.parametrize(
    "path, body, raw, status, fragment",
    [
        ("/v1/models/sentiment:predict", None, b"{not json", 400, "malformed JSON"),
        ("/v1/models/sentiment:predict", {"rows": ["x"]}, None, 400, "exactly one of"),
        ("/v1/models/sentiment:predict", {"instances": []}, None, 400, "non-empty list"),
        ("/v1/models/sentiment:predict", {"instances": [1, 2]}, None, 400, "input 'text'"),
        ("/v1/models/sentiment:predict", {"inputs": {"text": [["a", "b"]]}}, None, 400, "shape [1, 2]"),
        ("/v1/models/sentiment:predict", {"inputs": {"txt": ["a"]}}, None, 400, "unknown: txt"),
        ("/v1/models/sentiment:predict", {"instances": ["a"], "signature_name": "nope"}, None, 400, "\"nope\" not found"),
        ("/v1/models/sentiment:predict", {"instances": ["a"] * 2000}, None, 400, "over the limit of 1024"),
        ("/v1/models/sentiment:predict", {"instances": [{"b64": "%%%"}]}, None, 400, "not valid base64"),
        ("/v1/models/nothing:predict", {"instances": ["a"]}, None, 404, "Latest(nothing)"),
        ("/v1/models/sentiment/versions/7:predict", {"instances": ["a"]}, None, 404, "Specific(sentiment, 7)"),
        ("/v1/models/sentiment/versions/x:predict", {"instances": ["a"]}, None, 400, "whole number"),
        ("/v1/models/sentiment/versions/7", None, None, 404, "Specific(sentiment, 7)"),
        ("/v1/nothing", None, None, 404, "no such endpoint"),
    ],
)
def test_malformed_requests_get_a_4xx_error(server, path, body, raw, status, fragment):
    got, answer = call(server.port, path, body, raw)
    assert got == status and fragment in answer["error"], answer


def test_a_body_over_the_limit_is_refused(models):
    server = Server(models, _free_port(), "--max-body-mb", "0.01")
    try:
        status, answer = call(server.port, "/v1/models/sentiment:predict", {"instances": ["x" * 20000]})
        assert status == 413 and "over the limit" in answer["error"]
    finally:
        server.stop()


def test_concurrent_clients_get_no_errors_and_leak_no_files(server):
    def open_files():
        return len(os.listdir(f"/proc/{server.process.pid}/fd"))

    failures = []
    alone = {text: call(server.port, "/v1/models/sentiment:predict", {"instances": [text]})[1]["predictions"][0] for text in TEXTS}

    def client(index, requests=200):
        for i in range(requests):
            text = TEXTS[(index + i) % 3]
            status, answer = call(server.port, "/v1/models/sentiment:predict", {"instances": [text]})
            # Joined with other clients' requests by server-side batching, each still gets its own answer.
            if status != 200 or len(answer["predictions"]) != 1 or answer["predictions"][0]["label"] != alone[text]["label"] \
                    or abs(answer["predictions"][0]["probability"] - alone[text]["probability"]) > 1e-5:
                failures.append((status, answer))

    def clients(requests):
        threads = [threading.Thread(target=client, args=(k, requests)) for k in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    clients(10)  # warm up: TensorFlow and the thread pool open what they keep open
    time.sleep(1)
    before = open_files()
    clients(200)
    assert failures == []
    time.sleep(1)
    assert open_files() <= before + 4
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics").read().decode()
    assert 'dlapps_requests_total{code="200",method="predict",model="sentiment"}' in text
    assert "dlapps_request_seconds_bucket" in text
    assert "dlapps_batch_requests_count" in text


@pytest.fixture(scope="module")
def doubler(tmp_path_factory):
    """A small real SavedModel: `double` refuses negative numbers (as a model's own input checks do);
    `total` answers one number for the whole batch, so its calls cannot be split by rows; `ones`
    pads its rows to the batch's longest, so joined calls would change its answers."""
    import tensorflow as tf

    class Doubler(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
        def double(self, x):
            with tf.control_dependencies([tf.debugging.assert_non_negative(x, message="x must not be negative")]):
                return {"y": x * 2.0}

        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
        def total(self, x):
            return {"sum": tf.reduce_sum(x)}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.int32, name="n")])
        def ones(self, n):  # rows as long as the batch's largest n: a variable size beyond the batch
            return {"ones": tf.sequence_mask(n, dtype=tf.float32)}

    module = Doubler()
    path = tmp_path_factory.mktemp("doubler") / "1"
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.double, "total": module.total, "ones": module.ones})
    from dlapps.shared import serve

    return serve.Servable("doubler", 1, path).load()


def _answer_together(servable, bodies, batching=True):
    """The answers to `bodies` sent at once, through the server's batcher; and the joined calls."""
    import asyncio

    from dlapps.shared import serve

    calls = []

    async def main():
        batcher = serve.Batcher(asyncio.Semaphore(4), max_rows=256, observe=lambda requests, rows: calls.append((requests, rows)))

        async def one(body):
            try:
                return await batcher.answer(servable, serve.parse_request(servable, body, serve.Limits()))
            except serve.RequestError as error:
                return {"error": str(error)}

        return await asyncio.gather(*(one(b) for b in bodies))

    return asyncio.run(main()), calls


def test_server_side_batching_joins_requests_and_answers_each_its_own(doubler):
    from dlapps.shared import serve

    bodies = [{"instances": [[i, i + 1.0]] * (1 + i % 3)} for i in range(6)] + [{"inputs": {"x": [[7.0, 8.0]]}}]
    answers, calls = _answer_together(doubler, bodies)
    # The first two find the signature idle (two calls may run at once) and run alone; the other
    # five arrive while it is busy and share one call.
    assert calls == [(1, 1), (1, 2), (5, 3 + 1 + 2 + 3 + 1)]
    assert answers == [serve.predict(doubler, body, serve.Limits()) for body in bodies]
    assert answers[1] == {"predictions": [[2.0, 4.0], [2.0, 4.0]]} and answers[-1] == {"outputs": [[14.0, 16.0]]}


def test_a_refused_request_in_a_batch_fails_alone(doubler):
    bodies = [{"instances": [[0.0, 0.0]]}] * 2 + [{"instances": [[1.0, 2.0]]}, {"instances": [[-1.0, 2.0]]}, {"instances": [[3.0, 4.0]]}]
    answers, calls = _answer_together(doubler, bodies)
    assert calls == [(1, 1), (1, 1), (3, 3)]
    assert answers[2] == {"predictions": [[2.0, 4.0]]} and answers[4] == {"predictions": [[6.0, 8.0]]}
    assert "x must not be negative" in answers[3]["error"]


def test_signatures_without_a_batch_dimension_are_never_joined(doubler):
    bodies = [{"signature_name": "total", "instances": [[1.0, 2.0]]}, {"signature_name": "total", "instances": [[3.0, 4.0], [5.0, 6.0]]}]
    answers, calls = _answer_together(doubler, bodies)
    assert calls == [] and [a["predictions"] for a in answers] == [3.0, 18.0]
    answers, calls = _answer_together(doubler, [{"signature_name": "ones", "instances": [1]}, {"signature_name": "ones", "instances": [3]}])
    assert calls == [] and [a["predictions"] for a in answers] == [[[1.0]], [[1.0, 1.0, 1.0]]]


def test_a_new_version_is_served_when_it_appears(models, server, tmp_path_factory):
    run_dir = trained(tmp_path_factory, "sentiment", *SENTIMENT_ARGS)
    again = run_cli("sentiment", "export", "-m", run_dir, "--out", models / "sentiment", "--json")
    assert_ok(again)
    assert json.loads(again.output)["version"] == 2 and (models / "sentiment" / "serving" / "2" / "saved_model.pb").exists()
    deadline = time.time() + 60
    while time.time() < deadline:
        versions = [v["version"] for v in call(server.port, "/v1/models/sentiment")[1]["model_version_status"]]
        if versions[0] == "2" and call(server.port, "/v1/models/sentiment:predict", {"instances": ["fine"]})[0] == 200:
            break
        time.sleep(0.5)
    assert versions == ["2", "1"]
    assert call(server.port, "/v1/models/sentiment/versions/1:predict", {"instances": ["fine"]})[0] == 200


def test_a_tensorflow_serving_api_predict_request_round_trips(server):
    """A PredictRequest built as the reference client builds it, sent in REST's columnar JSON,
    and the answer read back into a PredictResponse with the signature's dtypes and shapes."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "sentiment"
    request.model_spec.signature_name = "serving_default"
    request.inputs["text"].CopyFrom(tf.make_tensor_proto(TEXTS, dtype=tf.string))
    body = {"signature_name": request.model_spec.signature_name,
            "inputs": {name: [v.decode() for v in tf.make_ndarray(proto).tolist()] for name, proto in request.inputs.items()}}
    status, answer = call(server.port, f"/v1/models/{request.model_spec.name}:predict", body)
    assert status == 200
    response = predict_pb2.PredictResponse()
    response.model_spec.CopyFrom(request.model_spec)
    for name, value in answer["outputs"].items():
        response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
    assert tf.make_ndarray(response.outputs["probabilities"]).shape == (3, 2)
    assert response.outputs["label"].dtype == tf.string.as_datatype_enum
    assert [v.decode() for v in tf.make_ndarray(response.outputs["label"])] == answer["outputs"]["label"]


def test_the_try_it_page_lists_every_model_with_a_form(server):
    page = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/").read().decode()
    for fragment in ("<h2>sentiment</h2>", "<h2>word2vec</h2>", 'id="form-sentiment"', 'data-input="text"', "serving_default"):
        assert fragment in page


def test_sigterm_lets_requests_in_flight_finish(models):
    server = Server(models, _free_port())
    results = []

    def client():
        results.append(call(server.port, "/v1/models/sentiment:predict", {"instances": TEXTS * 300}, timeout=120)[0])

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(0.3)
    server.process.send_signal(signal.SIGTERM)
    for thread in threads:
        thread.join()
    server.process.wait(timeout=60)
    # uvicorn finishes what is in flight, then re-raises SIGTERM, so the exit status says why it stopped
    assert results == [200] * 4 and server.process.returncode in (0, -signal.SIGTERM)


def test_a_missing_models_folder_is_one_line(tmp_path):
    from .helpers import assert_user_error

    assert_user_error(run_cli("serve", "--models", tmp_path / "none"), "none", "no such folder")
    assert_user_error(run_cli("serve", "--port", "0"), "--port must be between 1 and 65535")


@pytest.mark.skipif(not any(os.path.exists(p) for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser")),
                    reason="no Chromium installed (apt-get install chromium chromium-driver)")
def test_the_try_it_page_answers_in_a_real_browser(server, tmp_path):
    pytest.importorskip("selenium")
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    options.binary_location = "/usr/bin/chromium"
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService("/usr/bin/chromedriver"))
    try:
        driver.set_window_size(1100, 1400)
        driver.get(f"http://127.0.0.1:{server.port}/")
        driver.find_element(By.CSS_SELECTOR, '#form-sentiment textarea[data-input="text"]').send_keys("the acting was superb")
        driver.find_element(By.CSS_SELECTOR, "#form-sentiment button").click()
        WebDriverWait(driver, 60).until(lambda d: "HTTP 200" in d.find_element(By.ID, "out-sentiment").text)
        assert '"label"' in driver.find_element(By.ID, "out-sentiment").text
        screenshot = os.environ.get("DLAPPS_SCREENSHOT") or str(tmp_path / "serve.png")
        driver.save_screenshot(screenshot)
    finally:
        driver.quit()


def test_onnx_export_answers_as_keras_and_litert_says_why_it_cannot(tmp_path, tmp_path_factory):
    """--format onnx writes the tensor core and checks it in onnxruntime; sentiment's LSTMs have
    no LiteRT builtin form, which is one line, not a traceback. (anomaly's tests export a LiteRT
    model that the LiteRT interpreter runs.)"""
    import onnxruntime

    from .helpers import assert_user_error

    run_dir = trained(tmp_path_factory, "sentiment", *SENTIMENT_ARGS)
    result = run_cli("sentiment", "export", "-m", run_dir, "--format", "onnx", "--out", tmp_path, "--json")
    assert_ok(result)
    exported = json.loads(result.output)
    assert exported["checked"]["max_abs_difference"] <= 1e-3 and exported["path"].endswith("model.onnx")
    from dlapps.shared import training

    model = training.load_model(run_dir, "sentiment")
    ids = model.preprocessor(np.array(TEXTS, dtype=object)).numpy()
    session = onnxruntime.InferenceSession(exported["path"], providers=["CPUExecutionProvider"])
    (probabilities,) = session.run(None, {session.get_inputs()[0].name: ids})
    np.testing.assert_allclose(probabilities, model.predict(ids, verbose=0), atol=1e-4)
    assert_user_error(run_cli("sentiment", "export", "-m", run_dir, "--format", "litert", "--out", tmp_path),
                      "cannot be converted to LiteRT", "--format onnx")
    assert not (tmp_path / "model.tflite").exists()
