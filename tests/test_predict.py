"""fer_core.predict: Predictor (loading, batching, inputs, errors, threads), annotate, the CLI."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from fer_core.errors import FerError
from fer_core.labels import FER7, MERGED6
from fer_core.drawing import annotate
from fer_core.predict import FacePrediction, Predictor
from fer_core.synthetic import synthetic_frame
from fer_core.vision import DetectorConfig
from tests.factories import png, save_run, tiny_model


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return save_run(tmp_path_factory.mktemp("runs"), "tiny-run", tiny_model(),
                    {"labels": list(FER7), "label_set": "fer7"})


@pytest.fixture(scope="module")
def predictor(run_dir) -> Predictor:
    return Predictor(run_dir, DetectorConfig.realtime())


# --------------------------------------------------------------------------- loading

def test_loads_run_dir_with_labels_and_uses_tflite(predictor, run_dir):
    assert predictor.labels == FER7 and predictor.label_set == "fer7"
    assert predictor.backend_name == "tflite"
    assert predictor.model_id.startswith("tiny-run-")
    assert Predictor(run_dir / "model.keras").model_id == predictor.model_id


def test_model_id_changes_when_the_model_file_changes(tmp_path):
    run = save_run(tmp_path, "r", tiny_model(), list(FER7))  # labels.json as a plain list
    first = Predictor(run, backend="keras")
    assert first.labels == FER7
    tiny_model(seed=1).save(run / "model.keras")
    assert Predictor(run, backend="keras").model_id != first.model_id


def test_labels_default_from_output_count_without_labels_json(tmp_path):
    run = save_run(tmp_path, "six", tiny_model(6))
    assert Predictor(run, backend="keras").labels == MERGED6
    run5 = save_run(tmp_path, "five", tiny_model(5))
    with pytest.raises(FerError, match="5 outputs"):
        Predictor(run5, backend="keras")


def test_bad_model_paths_and_files_raise_fer_error(tmp_path, monkeypatch):
    with pytest.raises(FerError) as e:
        Predictor(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(e.value)
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"PK\x03\x04 this is not a keras archive")
    with pytest.raises(FerError) as e:
        Predictor(corrupt)
    assert "corrupt.keras" in str(e.value)
    txt = tmp_path / "model.txt"
    txt.write_text("hello")
    with pytest.raises(FerError, match="keras"):
        Predictor(txt)
    (tmp_path / "empty-run").mkdir()
    with pytest.raises(FerError, match="model.keras"):
        Predictor(tmp_path / "empty-run")
    import keras
    inp = keras.Input((64, 64, 3))
    wrong = keras.Model(inp, keras.layers.Dense(7, activation="softmax")(
        keras.layers.GlobalAveragePooling2D()(inp)))
    run = save_run(tmp_path, "rgb64", wrong)
    with pytest.raises(FerError, match="48x48x1"):
        Predictor(run)
    bad_labels = save_run(tmp_path, "badlabels", tiny_model(), {"labels": ["a", "b"]})
    with pytest.raises(FerError, match="2 labels"):
        Predictor(bad_labels)
    (bad_labels / "labels.json").write_text("{not json")
    with pytest.raises(FerError, match="labels.json"):
        Predictor(bad_labels)
    from fer_core import resolve
    monkeypatch.delenv("FER_MODEL", raising=False)
    monkeypatch.setattr(resolve, "DEFAULT_MODEL", tmp_path / "fer2013-default")
    with pytest.raises(FerError, match="--model") as e:
        Predictor()
    assert "fer2013-default" in str(e.value)


# --------------------------------------------------------------------------- faces

def test_predict_faces_matches_keras_and_sums_to_one(predictor):
    faces = np.random.default_rng(0).integers(0, 256, (5, 48, 48), dtype=np.uint8)
    probs = predictor.predict_faces(faces)
    assert probs.shape == (5, 7) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    ref = predictor.model.predict(faces[..., None].astype(np.float32), verbose=0)
    np.testing.assert_allclose(probs, ref, atol=1e-4)
    np.testing.assert_allclose(predictor.predict_faces(faces[..., None]), probs, atol=1e-6)
    assert predictor.predict_faces(np.zeros((0, 48, 48), np.uint8)).shape == (0, 7)
    big = np.repeat(faces, 30, axis=0)  # 150 faces: chunks of 64 + a padded bucket
    np.testing.assert_allclose(predictor.predict_faces(big)[::30], probs, atol=1e-4)
    with pytest.raises(FerError, match="48, 48"):
        predictor.predict_faces(np.zeros((2, 64, 64), np.uint8))


def test_keras_backend_agrees_with_tflite(run_dir, predictor):
    faces = np.random.default_rng(1).integers(0, 256, (3, 48, 48), dtype=np.uint8)
    keras_p = Predictor(run_dir, backend="keras")
    assert keras_p.backend_name == "keras"
    np.testing.assert_allclose(keras_p.predict_faces(faces), predictor.predict_faces(faces),
                               atol=1e-4)


def test_logit_models_are_normalised():
    p = Predictor(tiny_model(softmax=False), labels=FER7)
    probs = p.predict_faces(np.random.default_rng(2).integers(0, 256, (4, 48, 48),
                                                                dtype=np.uint8))
    assert (probs >= 0).all()
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)


def test_tta_averages_each_face_with_its_mirror_in_one_call(run_dir, predictor):
    faces = np.random.default_rng(3).integers(0, 256, (3, 48, 48), dtype=np.uint8)
    plain = predictor.predict_faces(faces)
    mirrored = predictor.predict_faces(faces[:, :, ::-1])
    assert np.abs(plain - mirrored).max() > 1e-3, "the test faces must not be symmetric"
    before = predictor.calls
    tta = predictor.predict_faces(faces, tta=True)
    assert predictor.calls - before == 1, "faces and mirrors share one model call"
    np.testing.assert_allclose(tta, 0.5 * (plain + mirrored), atol=1e-5)
    np.testing.assert_allclose(tta.sum(1), 1.0, atol=1e-5)

    on = Predictor(run_dir, DetectorConfig.realtime(), tta=True)
    assert on.tta and on.info()["tta"] is True and predictor.info()["tta"] is False
    np.testing.assert_allclose(on.predict_faces(faces), tta, atol=1e-5)
    np.testing.assert_allclose(on.predict_faces(faces, tta=False), plain, atol=1e-5)
    big = np.repeat(faces, 40, axis=0)  # 120 faces + 120 mirrors: chunked, still averaged
    np.testing.assert_allclose(on.predict_faces(big)[::40], tta, atol=1e-4)
    frame = synthetic_frame(640, 480, face_size=160)
    (face,) = on.predict_image(frame)
    (same,) = predictor.predict_image(frame, tta=True)
    assert face.box == same.box and face.scores == pytest.approx(same.scores, abs=1e-5)


# --------------------------------------------------------------------------- images

def test_predict_image_finds_the_face_box_inside_the_frame(predictor):
    frame = synthetic_frame(640, 480, face_size=160)
    faces = predictor.predict_image(frame, top_k=3)
    assert len(faces) == 1
    f = faces[0]
    assert isinstance(f, FacePrediction)
    x, y, w, h = f.box
    assert 0 <= x and 0 <= y and x + w <= 640 and y + h <= 480
    assert abs(x + w / 2 - 320) < 30 and abs(y + h / 2 - 240) < 30
    assert set(f.scores) == set(FER7)
    assert abs(sum(f.scores.values()) - 1) < 1e-5
    assert f.emotion == max(f.scores, key=f.scores.get)
    assert [k for k, _ in f.top_k] == sorted(f.scores, key=f.scores.get, reverse=True)[:3]
    d = f.to_dict()
    assert set(d) >= {"box", "emotion", "scores"} and json.dumps(d)


def test_all_faces_of_a_frame_go_through_the_model_in_one_call(predictor):
    frame = np.full((480, 960, 3), 180, np.uint8)
    for cx in (160, 480, 800):
        face = synthetic_frame(320, 480, face_size=130, centre=(160, 240))
        frame[:, cx - 160:cx + 160] = face
    before = predictor.calls
    faces = predictor.predict_image(frame)
    assert predictor.calls - before == 1
    assert len(faces) == 3
    assert sorted(f.box[0] + f.box[2] // 2 for f in faces) == pytest.approx([160, 480, 800],
                                                                           abs=30)


def test_every_input_kind_gives_the_same_prediction(predictor, tmp_path):
    bgr = synthetic_frame(640, 480, face_size=160)
    path = tmp_path / "face.png"
    path.write_bytes(png(bgr))
    ref = predictor.predict_image(bgr)
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    rgba = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGBA)
    for got in (predictor.predict_image(path), predictor.predict_image(str(path)),
                predictor.predict_image(path.read_bytes()),
                predictor.predict_image(rgb, color="rgb"),
                predictor.predict_image(rgba, color="rgb"),
                predictor.predict_image(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))):
        # grey input reaches a CNN detector as grey RGB: boxes within a few pixels
        assert len(got) == 1 and got[0].box == pytest.approx(ref[0].box, abs=8)
        for k in FER7:
            assert got[0].scores[k] == pytest.approx(ref[0].scores[k], abs=1e-2)


def test_no_detect_uses_the_whole_image(predictor):
    face = synthetic_frame(96, 96, face_size=40)
    got = predictor.predict_image(face, detect=False, top_k=7)
    assert len(got) == 1 and got[0].box == [0, 0, 96, 96] and len(got[0].top_k) == 7
    assert predictor.predict_image(np.full((200, 200), 128, np.uint8)) == []


@pytest.mark.parametrize("blob", [b"", b"\x00\x01garbage" * 50, png(np.zeros((9, 9)))[:40]])
def test_bad_images_raise_fer_error(predictor, blob):
    with pytest.raises(FerError):
        predictor.predict_image(blob, name="bad.png")


def test_eight_threads_match_serial_results(predictor):
    frames = [synthetic_frame(640, 480, face_size=s, centre=(c, 240), smile=k % 2 == 0, seed=k)
              for k, (s, c) in enumerate([(120, 200), (150, 300), (170, 330), (200, 420)])]
    serial = [[(f.box, f.scores) for f in predictor.predict_image(fr)] for fr in frames]
    results, errors = {}, []

    def work(t):
        try:
            results[t] = [[(f.box, f.scores) for f in predictor.predict_image(frames[(t + j) % 4])]
                          for j in range(6)]
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for t, got in results.items():
        for j, faces in enumerate(got):
            want = serial[(t + j) % 4]
            assert len(faces) == len(want)
            for (box, sc), (wbox, wsc) in zip(faces, want):
                assert box == wbox
                assert max(abs(sc[k] - wsc[k]) for k in sc) < 1e-5


# --------------------------------------------------------------------------- drawing

def test_annotate_box_and_emoji_modes(predictor):
    frame = synthetic_frame(640, 480, face_size=160)
    faces = predictor.predict_image(frame)
    x, y, w, h = faces[0].box
    boxed = annotate(frame, faces)
    assert boxed.shape == frame.shape and not np.array_equal(boxed, frame)
    assert np.array_equal(boxed[y + h // 2, x + w // 2], frame[y + h // 2, x + w // 2])
    assert not np.array_equal(boxed[y:y + h, x], frame[y:y + h, x])  # the box's left edge
    happy = FacePrediction(box=faces[0].box, emotion="happy",
                           scores={k: (0.9 if k == "happy" else 0.1 / 6) for k in FER7})
    emoji = annotate(frame, [happy], mode="emoji")
    centre = emoji[y + h // 3:y + 2 * h // 3, x + w // 4:x + 3 * w // 4].reshape(-1, 3)
    yellowish = (centre[:, 2] > 180) & (centre[:, 1] > 150) & (centre[:, 0] < 120)
    assert yellowish.mean() > 0.3
    grey_out = annotate(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), faces)
    assert grey_out.shape == frame.shape
    with pytest.raises(FerError, match="mode"):
        annotate(frame, faces, mode="sparkles")


# --------------------------------------------------------------------------- CLI

def test_cli_predict_json_out_and_errors(run_dir, tmp_path, capsys):
    from fer_core.cli import main
    img = tmp_path / "one.png"
    img.write_bytes(png(synthetic_frame(640, 480, face_size=160)))
    assert main(["predict", str(img), "--model", str(run_dir), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["image"] == str(img) and len(out["faces"]) == 1
    assert set(out["faces"][0]) >= {"box", "emotion", "scores"}
    assert abs(sum(out["faces"][0]["scores"].values()) - 1) < 1e-3

    other = tmp_path / "crop.png"
    other.write_bytes(png(np.full((48, 48), 100, np.uint8)))
    dest = tmp_path / "annotated"
    assert main(["predict", str(img), str(other), "--model", str(run_dir), "--json",
                 "--out", str(dest), "--mode", "emoji"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert isinstance(out, list) and [o["image"] for o in out] == [str(img), str(other)]
    assert out[1]["faces"] == []
    written = cv2.imread(out[0]["annotated"])
    assert written is not None and written.shape == (480, 640, 3)

    assert main(["predict", str(other), "--model", str(run_dir), "--no-detect", "--json"]) == 0
    single = json.loads(capsys.readouterr().out)
    assert len(single["faces"]) == 1 and single["tta"] is False
    assert main(["predict", str(img), "--model", str(run_dir), "--tta", "--json"]) == 0
    tta_out = json.loads(capsys.readouterr().out)
    expect = Predictor(run_dir, DetectorConfig.preset("photo")).predict_image(
        synthetic_frame(640, 480, face_size=160), tta=True)[0]
    assert tta_out["tta"] is True
    assert tta_out["faces"][0]["scores"] == pytest.approx(expect.scores, abs=1e-4)

    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"definitely not a jpeg")
    assert main(["predict", str(img), str(bad), "--model", str(run_dir), "--json"]) == 2
    captured = capsys.readouterr()
    assert "bad.jpg" in captured.err and captured.out == ""
    assert main(["predict", str(tmp_path / "missing.png"), "--model", str(run_dir)]) == 2
    assert "missing.png" in capsys.readouterr().err


def test_bench_predict_reports_timings(run_dir, capsys):
    from fer_core.cli import main
    assert main(["bench", "predict", "--model", str(run_dir), "--repeat", "5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("frame_ms_median", "face_ms_median", "detect_ms_median", "frame_ms_p90"):
        assert out[key] > 0
    assert out["faces_found"] == 1 and out["backend"] == "tflite" and out["tta"] is False
    assert main(["bench", "predict", "--model", str(run_dir), "--repeat", "5", "--tta",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["tta"] is True and out["face_ms_median"] > 0
