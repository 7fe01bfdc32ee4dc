"""anomaly: the contract suite for each kind (tables; series and images marked slow), the score
and threshold machinery, and every bad input."""

import json
from pathlib import Path

import numpy as np
import pytest

from dlapps.apps.anomaly import data as anomaly_data

from .contract import AnotherArchitecture, AppContract, predict_json, trained
from .helpers import assert_user_error, run_cli

TABLE = ("--kind", "tabular", "--demo-size", "800", "--hidden-units", "16", "--batch-size", "32", "--learning-rate", "0.01")
SERIES = ("--kind", "timeseries", "--demo-size", "1600", "--window", "32", "--filters", "8,4", "--batch-size", "64", "--learning-rate", "0.005")
IMAGES = ("--kind", "image", "--demo-size", "400", "--image-size", "16", "--filters", "8,4", "--batch-size", "32", "--learning-rate", "0.005")
EPOCHS = 10


def write_table(path: Path, x: np.ndarray, columns: list[str], labels=None) -> Path:
    header = ",".join(columns + (["label"] if labels is not None else []))
    lines = [",".join(f"{v:.6g}" for v in row) + (f",{labels[i]}" if labels is not None else "") for i, row in enumerate(x)]
    path.write_text(header + "\n" + "\n".join(lines) + "\n")
    return path


def write_series(path: Path, series) -> Path:
    path.write_text("timestamp,value\n" + "".join(f"{t},{v[0]:.5f}\n" for t, v in zip(series.timestamps, series.values)))
    return path


class TestTabularContract(AppContract):
    app = "anomaly"
    train_args = TABLE
    epochs = EPOCHS
    learned = {"val_roc_auc": (0.9, 1.0)}
    evaluate_keys = ("examples", "anomalies", "roc_auc", "average_precision", "precision", "recall", "f1", "flagged", "threshold")
    bad_train_inputs = [
        ({"text.csv": b"a,b,city\n1,2,Paris\n3,4,Rome\n"}, ["--data", "{tmp}/text.csv"], ["text.csv", "line 2", "column 'city' is not numeric"]),
        ({"ragged.csv": b"a,b\n1,2\n3\n"}, ["--data", "{tmp}/ragged.csv"], ["ragged.csv", "line 3", "1 fields, the header has 2"]),
        ({"flat.csv": b"a,b\n1,2\n1,2\n1,2\n"}, ["--data", "{tmp}/flat.csv"], ["flat.csv", "every column is constant"]),
        ({"empty.csv": b""}, ["--data", "{tmp}/empty.csv"], ["empty.csv", "empty file"]),
        ({"labels.csv": b"a,b,label\n1,2,0\n3,4,maybe\n"}, ["--data", "{tmp}/labels.csv"], ["labels.csv", "line 3", "'maybe' is not a 0/1 anomaly label"]),
        ({"t.csv": b"a,b\n1,2\n3,4\n"}, ["--data", "{tmp}/t.csv", "--label-column", "y"], ["t.csv", "no label column 'y'"]),
        ({"fake.mat": b"MATLAB 5.0 but not really"}, ["--data", "{tmp}/fake.mat"], ["fake.mat", "not a readable MATLAB file"]),
        ({"nox.npz": b""}, ["--data", "{tmp}/nox.npz"], ["nox.npz", "not a readable .npz file"]),
        ({"short.csv": b"timestamp,value\n2026-01-01 00:00:00,1\n2026-01-01 00:05:00,2\n"},
         ["--data", "{tmp}/short.csv", "--kind", "timeseries", "--window", "32", "--filters", "8,4"], ["short.csv", "2 steps", "shorter than one window of 32"]),
        ({"gap.csv": b"timestamp,value\n2026-01-01 00:00:00,1\n2026-01-01 00:05:00,\n"},
         ["--data", "{tmp}/gap.csv", "--kind", "timeseries"], ["gap.csv", "line 3", "missing value"]),
        ({}, ["--contamination", "0.1", "--threshold-percentile", "99"], ["--contamination and --threshold-percentile"]),
        ({}, ["--contamination", "0.5"], ["--contamination must be", "below 0.5, got 0.5"]),
        ({}, ["--kind", "timeseries", "--window", "30", "--filters", "8,4"], ["--window 30 must be a multiple of 4"]),
        ({}, ["--kind", "graph"], ["--kind must be one of", "tabular"]),
        ({}, ["--hidden-units", "16,0"], ["--hidden-units must be between 1 and 8192"]),
        ({}, ["--noise", "-0.5"], ["--noise must be at least 0", "-1 for the default"]),
        ({}, ["--data", "tfds:mnist"], ["tfds:mnist", "no tabular anomaly sets"]),
    ]

    def make_inputs(self, tmp_path):
        rows = anomaly_data.demo_table(60, seed=11)
        return [str(write_table(tmp_path / "rows.csv", rows.x, rows.columns, rows.labels))]

    def check_predictions(self, rows, inputs):
        assert [r["source"] for r in rows] == [f"rows.csv:{line}" for line in range(2, 62)]
        labels = anomaly_data.read_table(Path(inputs[0])).labels
        scores = np.array([r["score"] for r in rows])
        assert scores[labels == 1].min() > np.median(scores[labels == 0])
        assert any(r["anomaly"] for r in rows) and not all(r["anomaly"] for r in rows)

    def serving_call(self, inputs):
        return {"rows": anomaly_data.read_table(Path(inputs[0])).x.tolist()}, (), "serving_default"

    def check_served(self, served, rows):
        assert np.allclose(served["score"], [r["score"] for r in rows], rtol=1e-4)
        assert served["anomaly"] == [r["anomaly"] for r in rows]  # the threshold is inside the SavedModel


@pytest.mark.slow
class TestSeriesContract(AnotherArchitecture, AppContract):
    app = "anomaly"
    train_args = SERIES
    epochs = EPOCHS
    learned = {"val_roc_auc": (0.7, 1.0)}
    evaluate_keys = ("roc_auc", "f1", "windows", "windows_detected", "false_alarms")

    def make_inputs(self, tmp_path):
        return [str(write_series(tmp_path / "series.csv", anomaly_data.demo_series(400, seed=5)))]

    def check_predictions(self, rows, inputs):
        assert len(rows) == 400 and rows[0]["timestamp"] == "2026-01-01 00:00:00"
        assert {"source", "timestamp", "value", "score", "anomaly"} == set(rows[0])

    def serving_call(self, inputs):
        series = anomaly_data.read_series(Path(inputs[0]))
        return {"values": [series.values.tolist()]}, (), "serving_default"

    def check_served(self, served, rows):
        assert np.allclose(served["score"][0], [r["score"] for r in rows], rtol=1e-4)
        assert served["anomaly"][0] == [r["anomaly"] for r in rows]


@pytest.mark.slow
class TestImageContract(AnotherArchitecture, AppContract):
    app = "anomaly"
    train_args = IMAGES
    epochs = EPOCHS
    learned = {"val_roc_auc": (0.6, 1.0)}
    evaluate_keys = ("roc_auc", "average_precision", "f1")
    tfds_name = "mnist"
    tfds_train_args = ("--kind", "image", "--image-size", "16", "--filters", "8,4")

    def make_inputs(self, tmp_path):
        from dlapps.shared.images import save_png

        rng = np.random.default_rng(3)
        paths = []
        for i, anomaly in enumerate([False, False, True, False, True]):
            image = anomaly_data.demo_image(rng, anomaly)
            paths.append(str(save_png(tmp_path / f"image{i}.png", np.repeat(image, 3, axis=-1) if i % 2 else image[..., 0])))
        return paths

    def check_predictions(self, rows, inputs):
        assert [r["source"] for r in rows] == inputs

    def serving_call(self, inputs):
        return {"image_bytes": [Path(p).read_bytes() for p in inputs]}, ("image_bytes",), "serving_default"

    def check_served(self, served, rows):
        assert np.allclose(served["score"], [r["score"] for r in rows], rtol=1e-4)
        assert served["anomaly"] == [r["anomaly"] for r in rows]


# --- the app's own behaviour ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def table_run(tmp_path_factory):
    return trained(tmp_path_factory, "anomaly", "--epochs", str(EPOCHS), *TABLE)


def test_injected_anomalies_score_above_normal_rows_and_the_threshold_separates_them(table_run, tmp_path):
    fresh = anomaly_data.demo_table(400, seed=21)
    path = write_table(tmp_path / "fresh.csv", fresh.x, fresh.columns, fresh.labels)
    scores = np.array([r["score"] for r in predict_json("anomaly", table_run, [str(path)])])
    normal, anomalous = scores[fresh.labels == 0], scores[fresh.labels == 1]
    assert np.median(anomalous) > np.percentile(normal, 99)
    evaluated = json.loads(run_cli("anomaly", "evaluate", "-m", table_run, "--data", path, "--json").output)
    assert evaluated["roc_auc"] > 0.95 and evaluated["f1"] > 0.7 and evaluated["examples"] == 400


def test_columns_are_matched_by_name_and_missing_values_are_imputed(table_run, tmp_path):
    rows = anomaly_data.demo_table(10, seed=4)
    shuffled = write_table(tmp_path / "shuffled.csv", rows.x[:, ::-1], rows.columns[::-1])
    original = write_table(tmp_path / "original.csv", rows.x, rows.columns)
    assert [r["score"] for r in predict_json("anomaly", table_run, [str(shuffled)])] == \
           [r["score"] for r in predict_json("anomaly", table_run, [str(original)])]
    gaps = tmp_path / "gaps.csv"
    gaps.write_text(",".join(rows.columns) + "\n" + ",".join(["", "NA"] + [f"{v:.4f}" for v in rows.x[0, 2:]]) + "\n")
    assert np.isfinite(predict_json("anomaly", table_run, [str(gaps)])[0]["score"])


def test_predict_reads_mat_and_npz_and_writes_a_csv(table_run, tmp_path):
    import scipy.io

    rows = anomaly_data.demo_table(5, seed=8)
    scipy.io.savemat(tmp_path / "rows.mat", {"X": rows.x.astype(np.int16), "y": rows.labels[:, None].astype(float)})
    np.savez(tmp_path / "rows.npz", x=rows.x)
    out = tmp_path / "scores.csv"
    found = predict_json("anomaly", table_run, [str(tmp_path / "rows.mat"), str(tmp_path / "rows.npz")], "--csv", out)
    assert [r["source"] for r in found] == [f"rows.mat:{i}" for i in range(5)] + [f"rows.npz:{i}" for i in range(5)]
    assert out.read_text().splitlines()[0] == "source,score,anomaly" and len(out.read_text().splitlines()) == 11


def test_bad_prediction_inputs_get_one_line(table_run, tmp_path):
    narrow = write_table(tmp_path / "narrow.csv", np.ones((3, 4)), ["a", "b", "c", "d"])
    assert_user_error(run_cli("anomaly", "predict", narrow, "-m", table_run), "narrow.csv", "4 feature columns", "trained on 10")
    assert_user_error(run_cli("anomaly", "predict", tmp_path / "none.csv", "-m", table_run), "none.csv", "no such file")
    unlabelled = write_table(tmp_path / "unlabelled.csv", np.ones((3, 10)), [f"f{i}" for i in range(10)])
    assert_user_error(run_cli("anomaly", "evaluate", "-m", table_run, "--data", unlabelled), "unlabelled.csv", "no anomaly labels")


def test_threshold_rules():
    from dlapps.apps.anomaly.model import choose_threshold

    scores = np.arange(1, 101, dtype=float)
    assert choose_threshold(scores, contamination=0.1) == pytest.approx(np.quantile(scores, 0.9))
    assert choose_threshold(scores, percentile=99) == pytest.approx(np.percentile(scores, 99))
    q1, q3 = np.percentile(np.log(scores), [25, 75])
    assert choose_threshold(scores) == pytest.approx(np.exp(q3 + 3 * (q3 - q1)))
    clean = np.random.default_rng(0).chisquare(4, 5000)  # scores are sums of squares
    assert np.mean(clean > choose_threshold(clean)) < 0.01


def test_robust_statistics_survive_constant_binary_and_empty_columns():
    from dlapps.apps.anomaly.model import robust_statistics

    x = np.array([[1.0, 0, np.nan, 5], [1, 0, np.nan, 6], [1, 1, np.nan, 7], [1, 0, np.nan, 8], [1, 0, np.nan, 9]])
    center, scale = robust_statistics(x)
    assert center == [1.0, 0.0, 0.0, 7.0]
    assert scale[0] == 1.0 and scale[1] == pytest.approx(np.std([0, 0, 1, 0, 0])) and scale[2] == 1.0
    assert scale[3] == pytest.approx((8 - 6) / 1.349)


def test_the_ensemble_scores_the_mean_of_its_members_each_calibrated_on_the_closest_codes():
    from dlapps.apps.anomaly.model import TabularAutoencoder

    model = TabularAutoencoder([f"f{i}" for i in range(6)], [0.0] * 6, [1.0] * 6, hidden_units=[8], bottleneck=2, members=3)
    rows = np.random.default_rng(0).normal(size=(400, 6)).astype("float32")
    rows[:40] *= 10  # anomalies among the training rows
    model.calibrate(rows)
    found = model.measure(rows)
    assert found["error"].shape == (400, 3) and found["code"].shape == (400, 3, 2)
    centred = found["code"] - model.code_mean.numpy()
    distance = np.einsum("nmi,mij,nmj->nm", centred, model.code_precision.numpy(), centred)
    terms = found["error"] / model.error_scale.numpy() + distance / model.distance_scale.numpy()
    np.testing.assert_allclose(found["score"], terms.mean(axis=1), rtol=1e-4)
    # each member's terms over its own medians: a typical training row scores about 2 in every member
    np.testing.assert_allclose(np.median(terms, axis=0), 2.0, rtol=0.25)
    # the code's covariance comes from the closest 75%: tighter than that of all codes, anomalies included
    for member in range(3):
        trimmed = np.linalg.inv(model.code_precision.numpy()[member])
        assert np.trace(trimmed) < np.trace(np.cov(found["code"][:, member], rowvar=False))


def test_bagged_members_learn_from_seeded_shares_of_the_rows():
    from dlapps.apps.anomaly.app import member_shares
    from dlapps.apps.anomaly.config import AnomalyConfig

    part = anomaly_data.demo_table(1000, seed=1)
    shares = member_shares(part, AnomalyConfig(members=4, member_rows=0.5, seed=3))
    assert shares.shape == (1000, 4) and set(np.unique(shares)) == {0.0, 1.0}
    assert np.allclose(shares.mean(axis=0), 0.5, atol=0.06) and not (shares[:, 0] == shares[:, 1]).all()
    assert np.array_equal(shares, member_shares(part, AnomalyConfig(members=4, member_rows=0.5, seed=3)))
    assert member_shares(part, AnomalyConfig(members=1)) is None and member_shares(part, AnomalyConfig(member_rows=1.0)) is None


def test_series_steps_take_the_lowest_score_of_their_windows():
    from dlapps.apps.anomaly.model import SeriesAutoencoder

    model = SeriesAutoencoder(["value"], [0.0], [1.0], window=8, filters=[4, 2], kernel_size=3)
    values = np.random.default_rng(0).normal(size=(1, 20, 1)).astype("float32")
    steps = np.asarray(model.detect_series(values)["score"])[0]
    windows = np.lib.stride_tricks.sliding_window_view(values[0], 8, axis=0).transpose(0, 2, 1)
    window_scores = np.asarray(model.detect(windows)["score"])
    expected = [window_scores[max(0, t - 7): min(t, 12) + 1].min() for t in range(20)]
    assert np.allclose(steps, expected, rtol=1e-5)


def test_nab_windows_detected_and_false_alarms():
    from dlapps.apps.anomaly.app import window_detection

    labels = np.array([0, 1, 1, 0, 0, 0, 1, 1, 0, 0])
    flags = np.array([0, 0, 1, 0, 1, 0, 0, 0, 0, 1])
    assert window_detection(labels, flags) == {"windows": 2, "windows_detected": 1, "false_alarms": 2}


def test_nab_label_windows_are_read_and_matched_by_path(tmp_path):
    folder = tmp_path / "artificialWithAnomaly"
    folder.mkdir()
    series = write_series(folder / "s.csv", anomaly_data.demo_series(40))
    labels = tmp_path / "windows.json"
    labels.write_text(json.dumps({"artificialWithAnomaly/s.csv": [["2026-01-01 00:10:00.000000", "2026-01-01 00:20:00.000000"]]}))
    read = anomaly_data.read_series(series, labels_file=str(labels))
    assert read.labels.tolist() == [0, 0, 1, 1, 1] + [0] * 35
    labels.write_text(json.dumps({"other/s.csv": []}))
    with pytest.raises(Exception, match="no anomaly windows for s.csv"):
        anomaly_data.read_series(series, labels_file=str(labels))


def test_litert_and_onnx_exports_answer_as_keras_in_their_runtimes(table_run, tmp_path):
    """The tabular core (rows in; reconstruction error and code out) as model.tflite and
    model.onnx, each run in its own runtime on rows of the demo and compared with Keras."""
    import onnxruntime
    from ai_edge_litert.interpreter import Interpreter

    from dlapps.shared import training

    model = training.load_model(table_run, "anomaly", compile=False)
    rows = anomaly_data.demo_table(64, seed=9).x.astype("float32")
    expected = {k: np.asarray(v) for k, v in model(rows, training=False).items()}
    for fmt in ("litert", "onnx"):
        result = run_cli("anomaly", "export", "-m", table_run, "--format", fmt, "--out", tmp_path, "--json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["checked"]["max_abs_difference"] <= 1e-3
    runner = Interpreter(str(tmp_path / "model.tflite")).get_signature_runner()
    served = runner(**{next(iter(runner.get_input_details())): rows})
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    onnx = dict(zip(names, session.run(None, {session.get_inputs()[0].name: rows})))
    for name, value in expected.items():
        np.testing.assert_allclose(served[name], value, atol=1e-3)
        assert any(np.allclose(v, value, atol=1e-3) for v in onnx.values() if v.shape == value.shape), name
