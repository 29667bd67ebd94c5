"""The TensorFlow-free runtime, export and the Python API, in the shared (full) virtualenv.

Export of a tiny model to every format with its parity checked; FerModel running an exported
model.tflite without loading Keras; a stale export ignored; the Python API on images (path,
bytes, array, PIL), a video, evaluate and train; a subprocess in which TensorFlow cannot be
imported (as on the plain install) running predict and naming the [train] extra elsewhere.
The real installs are in tests/test_install.py; PublicTest parity of the shipped model is
at the end (skips without FER2013).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import fer_core
from fer_core import export as fer_export
from fer_core.errors import FerError
from fer_core.labels import FER7
from fer_core.model import FerModel, clear_cache, read_runtime, runtime_file
from tests.factories import face_image, pattern_faces, save_run, tiny_model

ROOT = Path(__file__).resolve().parent.parent

# Python prelude of a subprocess in which TensorFlow and Keras cannot be imported, as on the
# plain install; it also fails if anything tries.
NO_TF = """
import sys, importlib.abc
class _NoTF(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('tensorflow', 'keras', 'tf_keras'):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, _NoTF())
import importlib.util
_find = importlib.util.find_spec
def _find_spec(name, package=None):
    if name.split('.')[0] in ('tensorflow', 'keras'):
        return None
    return _find(name, package)
importlib.util.find_spec = _find_spec
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A tiny run with its exported model.tflite (parity checked on random faces)."""
    run = save_run(tmp_path_factory.mktemp("rt"), "tiny", tiny_model(),
                   {"labels": list(FER7), "label_set": "fer7"})
    fer_export.export(run, "tflite")
    return run


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("img") / "face.png"
    cv2.imwrite(str(p), face_image())
    return p


# --------------------------------------------------------------------------- export

def test_tflite_export_records_parity_and_the_source(run):
    rec = json.loads((run / "model.tflite.json").read_text())
    assert rec["format"] == "tflite" and rec["int8"] is False
    assert rec["parity"]["faces"] == 512
    assert rec["parity"]["top1_agreement"] >= 0.995 and rec["parity"]["max_prob_diff"] <= 1e-3
    from fer_core.model import file_sha256
    assert rec["source_sha256"] == file_sha256(run / "model.keras")


@pytest.mark.parametrize("fmt", ["onnx", "saved_model"])
def test_other_formats_export_with_parity(run, tmp_path, fmt):
    out = tmp_path / ("m.onnx" if fmt == "onnx" else "sm")
    rec = fer_export.export(run, fmt, out)
    assert out.exists() and (tmp_path / f"{out.name}.json").is_file()
    assert rec["parity"]["top1_agreement"] >= 0.995 and rec["parity"]["max_prob_diff"] <= 1e-3


def test_export_parity_on_labelled_data_and_int8(run, tmp_path):
    faces = pattern_faces(n_per_class=6)
    x = faces.images[..., None].astype(np.float32)
    ref = np.asarray(tiny_model()(x))  # same seed, same weights as the run's
    assert fer_export.parity(ref, ref, faces.labels)["accuracy_loss_points"] == 0.0
    flipped = ref[:, ::-1]
    p = fer_export.parity(ref, flipped, faces.labels)
    assert p["top1_agreement"] < 0.5 and p["max_prob_diff"] > 1e-3
    assert fer_export.check_parity("tflite", False, p)  # would refuse to write
    # int8 on random faces: written, agreement checked, no accuracy without labels
    rec = fer_export.export(run, "tflite", tmp_path / "q.tflite", int8=True)
    assert rec["int8"] and "accuracy_loss_points" not in rec["parity"]
    from fer_core.model import _interpreter_class

    def dtypes(path):
        it = _interpreter_class()(model_path=str(path))
        return {d["dtype"] for d in it.get_tensor_details()}
    assert np.int8 in dtypes(tmp_path / "q.tflite")
    assert np.int8 not in dtypes(run / "model.tflite")


def test_export_errors_name_the_argument(run, tmp_path):
    with pytest.raises(FerError) as e:
        fer_export.export(run, "coreml")
    assert e.value.where == "--format"
    with pytest.raises(FerError) as e:
        fer_export.export(run, "onnx", int8=True)
    assert e.value.where == "--int8"
    with pytest.raises(FerError) as e:
        fer_export.export(tmp_path / "nope", "tflite")
    assert "nope" in str(e.value)


# --------------------------------------------------------------------------- backend

def test_exported_model_runs_without_loading_keras(run):
    clear_cache()
    fm = FerModel.load(run)
    assert fm.backend_name == "tflite" and fm._model is None  # Keras model never read
    faces = pattern_faces(n_per_class=10).images  # 140 faces: chunks of 64, 64 and 12
    ref = np.asarray(tiny_model()(faces[..., None].astype(np.float32)))
    got = fm.predict_proba(faces[:8])
    assert np.abs(got - ref[:8]).max() < 1e-4
    bulk, _ = fm.forward(faces)  # large batches run on LiteRT too
    assert fm._model is None and fm.calls == 4
    assert np.abs(bulk - ref).max() < 1e-4
    assert fm.model is not None and fm._model is not None  # read when asked for (Grad-CAM)


def test_a_stale_export_is_ignored(run, tmp_path):
    other = save_run(tmp_path, "other", tiny_model(seed=1))
    (other / "model.tflite").write_bytes((run / "model.tflite").read_bytes())
    (other / "model.tflite.json").write_text((run / "model.tflite.json").read_text())
    blob, why = read_runtime(other)
    assert blob is None and "another model.keras" in why
    clear_cache()
    fm = FerModel.load(other)  # converted from its own .keras instead (TensorFlow present)
    ref = np.asarray(tiny_model(seed=1)(np.zeros((1, 48, 48, 1), np.float32)))
    assert np.abs(fm.predict_proba(np.zeros((1, 48, 48), np.uint8)) - ref).max() < 1e-4


def test_a_checked_conversion_is_reused_without_tensorflow(tmp_path):
    run = save_run(tmp_path, "plain", tiny_model(seed=2))
    faces = pattern_faces(n_per_class=1).images
    clear_cache()
    first = FerModel.load(run)  # converted by TensorFlow, checked against Keras, kept
    assert first.backend_name == "tflite" and first._model is not None
    ref = first.predict_proba(faces)
    clear_cache()
    again = FerModel.load(run)
    assert again.backend_name == "tflite" and again._model is None  # Keras never read
    assert np.abs(again.predict_proba(faces) - ref).max() < 1e-6
    # a fresh process (this process's FER_CACHE_DIR): no TensorFlow at all
    p = subprocess.run([sys.executable, "-c", f"""
import sys
from fer_core.model import FerModel
import numpy as np
m = FerModel.load({str(run)!r})
m.predict_proba(np.zeros((2, 48, 48), np.uint8))
print(sorted({{n.split('.')[0] for n in sys.modules}} & {{'tensorflow', 'keras'}}), m.backend_name)
"""], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.split() == ["[]", "tflite"]
    # an unreadable cached conversion is converted again, not an error
    cached = next(Path(fer_core.settings.get_settings().cache_dir, "tflite").glob("plain-*"))
    cached.write_bytes(b"not a flatbuffer")
    clear_cache()
    fixed = FerModel.load(run)
    assert fixed._model is not None and np.abs(fixed.predict_proba(faces) - ref).max() < 1e-6
    assert cached.read_bytes() != b"not a flatbuffer"


def test_shipped_model_carries_its_parity_checked_export():
    blob, why = read_runtime(fer_core.DEFAULT_MODEL)
    assert blob is not None, why
    rec = json.loads(runtime_file(fer_core.DEFAULT_MODEL).with_suffix(".tflite.json")
                     .read_text())
    assert rec["parity"]["faces_from"].endswith("[val]")  # FER2013 PublicTest
    assert rec["parity"]["faces"] == 3589
    assert rec["parity"]["top1_agreement"] >= 0.995 and rec["parity"]["max_prob_diff"] <= 1e-3
    assert "model.tflite" in (fer_core.DEFAULT_MODEL / "model_card.md").read_text()


# --------------------------------------------------------------------------- Python API

def test_public_api_names():
    assert set(fer_core.__all__) >= {"load_model", "train", "Model", "Face", "VideoResult",
                                     "FerError"}
    for name in fer_core.__all__:
        assert getattr(fer_core, name) is not None


@pytest.fixture(scope="module")
def api_model(run):
    return fer_core.load_model(run)


def test_api_predicts_paths_bytes_arrays_and_pil(api_model, photo):
    from PIL import Image
    bgr = cv2.imread(str(photo))
    results = [api_model.predict(photo), api_model.predict(photo.read_bytes()),
               api_model.predict(bgr),
               api_model.predict(Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))]
    for faces in results:
        assert len(faces) == 1 and isinstance(faces[0], fer_core.Face)
    first = results[0][0]
    for other in results[1:]:
        assert other[0].box == first.box
        assert other[0].emotion == first.emotion
    d = first.to_dict()
    assert set(d) >= {"box", "emotion", "scores", "confidence", "top_k"}
    assert abs(sum(first.probabilities.values()) - 1) < 1e-4
    assert api_model.backend == "tflite" and api_model.labels == FER7


def test_api_errors_are_fer_errors_with_where(api_model, tmp_path):
    with pytest.raises(FerError) as e:
        api_model.predict(tmp_path / "missing.jpg")
    assert e.value.where == str(tmp_path / "missing.jpg")
    with pytest.raises(FerError) as e:
        api_model.predict(12)
    assert e.value.where == "image"
    with pytest.raises(FerError) as e:
        api_model.predict(b"not an image")
    assert e.value.where == "image"
    with pytest.raises(FerError) as e:
        api_model.video(tmp_path / "missing.mp4")
    assert e.value.where.endswith("missing.mp4")


def test_api_video_returns_rows_and_summary(api_model, tmp_path):
    from fer_core.synthetic import synthetic_clip
    clip = synthetic_clip(tmp_path / "clip.mp4", seconds=1.0, fps=10, faces=1)
    res = api_model.video(clip, every=2)
    assert res.out_dir is None and len(res.frames) > 0
    assert {"frame", "time_s", "face", "emotion"} <= set(res.frames.columns)
    assert res.frames.to_dict("records") == res.rows  # the same rows, typed alike
    assert isinstance(res.rows[0]["face"], int) and isinstance(res.rows[0]["happy"], float)
    assert res.summary["video"]["frames"] == 10 and len(res.summary["faces"]) == 1


def test_api_evaluate_and_train_learn(tmp_path):
    faces = pattern_faces(n_per_class=24)
    model = fer_core.train(faces, tmp_path / "r", arch="vgg", epochs=2, batch_size=16, lr=3e-3,
                           warmup_epochs=0.0, shift=0.0, rotation=0.0, zoom=0.0, contrast=0.0,
                           erasing=0.0,
                           arch_params={"width": 8, "depth": 1, "bn_momentum": 0.8})
    assert isinstance(model, fer_core.Model)
    report = model.evaluate(faces, split="val")
    assert report["accuracy"] > 0.5  # chance is 1/7
    with pytest.raises(FerError) as e:
        fer_core.train(faces, tmp_path / "r2", no_such_option=1)
    assert e.value.where == "train"


# --------------------------------------------------------------------------- no TensorFlow

def _no_tf(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", NO_TF + code], cwd=cwd, capture_output=True,
                          text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT),
                               "FER_CACHE_DIR": str(cwd / "cache"), "HOME": str(cwd)})


def test_without_tensorflow_predict_runs_and_training_names_the_extra(photo, tmp_path):
    code = f"""
import json, sys, contextlib, io
from fer_core.cli import main
buf = io.StringIO()
with contextlib.redirect_stdout(buf):
    rc = main(["predict", {str(photo)!r}, "--json"])
out = json.loads(buf.getvalue())
import fer_core
faces = fer_core.load_model().predict({str(photo)!r})
heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))
rc_train = main(["train", "demo"])
print(json.dumps({{"rc": rc, "faces": len(out["faces"]), "api": len(faces),
                  "heavy": heavy, "rc_train": rc_train}}))
"""
    p = _no_tf(code, tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    got = json.loads(p.stdout.strip().splitlines()[-1])
    assert got == {"rc": 0, "faces": 1, "api": 1, "heavy": [], "rc_train": 2}
    assert "pip install 'fer-studio[train]'" in p.stderr and "Traceback" not in p.stderr


def test_without_tensorflow_an_unexported_run_names_the_extra(tmp_path):
    run = save_run(tmp_path, "plain", tiny_model())
    p = _no_tf(f"""
import fer_core
try:
    fer_core.load_model({str(run)!r})
except fer_core.FerError as e:
    print("ERR", e.where, e)
""", tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "ERR" in p.stdout and "fer-studio[train]" in p.stdout
    assert "fer-studio export" in p.stdout


# --------------------------------------------------------------------------- PublicTest

@pytest.mark.fer2013
def test_shipped_exports_agree_with_keras_on_publictest(fer2013_path):
    """The shipped model.tflite (float) and model.int8.tflite, run by LiteRT, against the
    Keras model on all of PublicTest: what their records and the model card claim."""
    from fer_core import data
    from fer_core.model import load_keras
    ds = data.load(fer2013_path)
    pick = ds.split == "val"
    x = ds.images[pick][..., None].astype(np.float32)
    keras_model = load_keras(fer_core.DEFAULT_MODEL)
    ref = fer_export.batched(lambda b: keras_model(b, training=False), x, 256)
    for name, int8 in (("model.tflite", False), ("model.int8.tflite", True)):
        got = fer_export.batched(fer_export.RUNNERS["tflite"](fer_core.DEFAULT_MODEL / name), x)
        p = fer_export.parity(ref, got, ds.labels[pick])
        assert p["faces"] == 3589 and not fer_export.check_parity("tflite", int8, p), (name, p)
        rec = json.loads((fer_core.DEFAULT_MODEL / f"{name}.json").read_text())["parity"]
        assert abs(rec["exported_accuracy"] - p["exported_accuracy"]) < 0.01, name
        assert abs(rec["top1_agreement"] - p["top1_agreement"]) < 1e-4, name


# --------------------------------------------------------------------------- packaging

def _pins(lines) -> dict[str, str]:
    import re
    out = {}
    for line in lines:
        m = re.match(r"^\s*([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==([^\s;#]+)", line)
        if m:
            out[m.group(1).lower().replace("_", "-")] = m.group(3)
    return out


def test_pyproject_pins_equal_the_requirements_pins():
    import tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        declared += [d for d in extra if not d.startswith("fer-studio")]
    ours = _pins(declared)
    reqs = _pins((ROOT / "requirements.txt").read_text().splitlines())
    assert len(ours) == len(declared)  # every dependency is an exact pin
    assert ours == reqs  # the same packages, the same versions
    runtime = _pins(project["dependencies"])
    assert not {"tensorflow-cpu", "keras", "streamlit"} & set(runtime)
    assert project["scripts"]["fer-studio"] == "fer_core.cli:console"


def test_app_command_finds_the_app_and_checks_its_port():
    from fer_core.cli import main
    from fer_core.commands.app import app_dir
    assert app_dir() == ROOT  # a checkout: the repo root (installed: fer_core/_app)
    assert main(["app", "--port", "0"]) == 2  # a clear error, before Streamlit starts
