"""The one model resolver (fer_core.resolve): its rules, its errors, and FER_MODEL honoured by
every entry point that picks a model: the CLI (predict, evaluate, calibrate, video, finetune),
the API (create_app as `serve` builds it), the app's pages (Home, Photo, Evaluate, Video, Models),
fine-tuning jobs, evaluation and the Python API (fer_core.load_model)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fer_core import resolve
from fer_core.errors import FerError
from fer_core.settings import Settings
from tests.factories import face_image, pattern_faces, png, write_fer_csv

ROOT = Path(__file__).resolve().parent.parent
ENV_NAME = "env-model"   # FER_MODEL's run: a name no other model here has


@pytest.fixture(scope="module")
def world(tiny_run_dir, tmp_path_factory):
    """Runs folder with the run ``env-model`` (the session's tiny model, copied) and another
    run; a face image; a small FER CSV with train and val splits."""
    root = tmp_path_factory.mktemp("resolver")
    runs = root / "runs"
    env_model = shutil.copytree(tiny_run_dir, runs / ENV_NAME)
    other = shutil.copytree(tiny_run_dir, runs / "other-run")
    face = root / "face.png"
    face.write_bytes(png(face_image()))
    csv = write_fer_csv(pattern_faces(n_per_class=15, splits=("train", "val", "test")),
                        root / "faces.csv")
    return {"root": root, "runs": runs, "env": env_model, "other": other, "face": face,
            "csv": csv}


@pytest.fixture
def env(world, monkeypatch):
    """FER_MODEL names ``env-model`` (by path); runs in the world's runs folder."""
    monkeypatch.setenv("FER_RUNS_DIR", str(world["runs"]))
    monkeypatch.setenv("FER_MODEL", str(world["env"]))
    return world


def _same(a, b) -> bool:
    return Path(a).resolve() == Path(b).resolve()


# ----------------------------------------------------------------------------- the rules

def test_rules_run_id_directory_keras_file_env_and_shipped(world, monkeypatch, tmp_path):
    s = Settings.from_env({"FER_RUNS_DIR": str(world["runs"])})
    assert _same(resolve.resolve_model("other-run", s), world["other"])            # run id
    assert _same(resolve.resolve_model(world["other"], s), world["other"])         # run dir
    keras_file = world["other"] / "model.keras"
    assert _same(resolve.resolve_model(str(keras_file), s), keras_file)            # .keras
    shipped = tmp_path / "fer2013-default"                                          # model dir
    shutil.copytree(world["env"], shipped)
    monkeypatch.setattr(resolve, "DEFAULT_MODEL", shipped)
    assert resolve.resolve_model(None, s) == shipped                                # shipped
    assert resolve.resolve_model("", s) == shipped
    by_path = s.with_(model=str(world["env"]))
    assert _same(resolve.resolve_model(None, by_path), world["env"])               # FER_MODEL
    by_id = s.with_(model=ENV_NAME)
    assert _same(resolve.resolve_model(None, by_id), world["env"])                 # ... an id
    assert _same(resolve.resolve_model("other-run", by_id), world["other"])        # named wins
    assert resolve.default_label(world["env"], by_id) == f"FER_MODEL {ENV_NAME}"
    assert resolve.default_label(shipped, s) == "shipped default fer2013-default"


def test_a_missing_or_wrong_model_is_a_clear_error_naming_where(world, monkeypatch, tmp_path):
    s = Settings.from_env({"FER_RUNS_DIR": str(world["runs"])})
    with pytest.raises(FerError, match="model not found") as e:
        resolve.resolve_model("no-such-run", s, where="--model")
    assert e.value.where == "--model no-such-run" and e.value.status == 404
    (tmp_path / "empty").mkdir()
    with pytest.raises(FerError, match="no model.keras") as e:
        resolve.resolve_model(tmp_path / "empty", s)
    assert str(tmp_path / "empty") in e.value.where
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    with pytest.raises(FerError, match="not a Keras model file"):
        resolve.resolve_model(notes, s)
    with pytest.raises(FerError, match="model not found") as e:
        resolve.resolve_model(None, s.with_(model=str(tmp_path / "gone")))
    assert e.value.where.startswith("FER_MODEL ")
    assert resolve.configured_model(s.with_(model=str(tmp_path / "gone"))) is None
    monkeypatch.setattr(resolve, "DEFAULT_MODEL", tmp_path / "fer2013-default")
    with pytest.raises(FerError, match="shipped default model is missing") as e:
        resolve.resolve_model(None, s)
    assert "fer2013-default" in e.value.where
    with pytest.raises(FerError, match="invalid run id"):
        resolve.run_path("bad id!", s)


# ----------------------------------------------------------------------------- the CLI

def _cli(capsys, *argv):
    from fer_core.cli import main
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_predict_uses_fer_model(env, capsys):
    code, out, err = _cli(capsys, "predict", str(env["face"]), "--no-detect", "--json")
    assert code == 0, err
    assert json.loads(out)["model_id"].startswith(f"{ENV_NAME}-")


def test_cli_evaluate_uses_fer_model(env, capsys):
    code, out, err = _cli(capsys, "evaluate", "--data", str(env["csv"]), "--json")
    assert code == 0, err
    assert json.loads(out)["model"] == ENV_NAME


def test_cli_calibrate_uses_fer_model(env, capsys):
    code, out, err = _cli(capsys, "calibrate", str(env["csv"]), "--no-write", "--bootstrap",
                          "100", "--json")
    assert code == 0, err
    assert json.loads(out)["model"] == ENV_NAME


def test_cli_video_uses_fer_model(env, capsys, tmp_path):
    from fer_core import synthetic
    clip = synthetic.synthetic_clip(tmp_path / "clip.mp4", seconds=0.3, fps=10, faces=1)
    code, out, err = _cli(capsys, "video", str(clip), "--out", str(tmp_path / "out"), "--json")
    assert code == 0, err
    assert json.loads(out)["processing"]["model"].startswith(f"{ENV_NAME}-")


def test_cli_commands_name_a_wrong_fer_model(env, capsys, monkeypatch, tmp_path):
    """The error says the model came from FER_MODEL (exit 2, one line), for every command."""
    monkeypatch.setenv("FER_MODEL", str(tmp_path / "gone-model"))
    for argv in (["predict", str(env["face"])], ["evaluate", "--data", str(env["csv"])],
                 ["calibrate", str(env["csv"])],
                 ["finetune", "--feedback-db", str(tmp_path / "fb.sqlite3")]):
        code, _, err = _cli(capsys, *argv)
        assert code == 2, (argv, err)
        assert "FER_MODEL" in err and "gone-model" in err and "not found" in err, (argv, err)
    monkeypatch.delenv("FER_MODEL")
    code, _, err = _cli(capsys, "predict", str(env["face"]), "--model", "no-such-run")
    assert code == 2 and "--model no-such-run" in err, err


def test_cli_takes_a_run_id(env, capsys):
    code, out, err = _cli(capsys, "predict", str(env["face"]), "--no-detect", "--json",
                          "--model", "other-run")
    assert code == 0, err
    assert json.loads(out)["model_id"].startswith("other-run-")


# ----------------------------------------------------------------------------- API, jobs, library

def test_api_serves_fer_model(env, monkeypatch, tmp_path):
    """create_app() without settings, as `serve` and `uvicorn --factory` build it."""
    from fastapi.testclient import TestClient

    from fer_core.api.app import create_app
    monkeypatch.setenv("FER_FEEDBACK_DB", str(tmp_path / "fb.sqlite3"))
    monkeypatch.setenv("FER_MODEL_POLL_S", "0")
    with TestClient(create_app()) as client:
        health = client.get("/v1/health").json()
        assert health["model_loaded"] and health["model_id"].startswith(f"{ENV_NAME}-")
        r = client.post("/v1/predict?detect=false", files={"file": ("f.png", png(face_image()),
                                                                    "image/png")})
        assert r.status_code == 200 and r.json()["model_id"] == health["model_id"]
        active = [m for m in client.get("/v1/models").json()["models"] if m["active"]]
        assert [m["name"] for m in active] == [ENV_NAME]


def test_api_names_a_wrong_fer_model(env, monkeypatch, tmp_path):
    from fastapi.testclient import TestClient

    from fer_core.api.app import create_app
    monkeypatch.setenv("FER_FEEDBACK_DB", str(tmp_path / "fb.sqlite3"))
    monkeypatch.setenv("FER_MODEL", "no-such-run")
    with TestClient(create_app()) as client:
        health = client.get("/v1/health").json()
        assert not health["model_loaded"]
        assert "FER_MODEL no-such-run" in health["model_error"]
        assert "not found" in health["model_error"]


def test_finetune_job_starts_from_fer_model(env, tmp_path):
    from fer_core import finetune
    spec = finetune.finetune_spec(None, tmp_path / "fb.sqlite3")
    assert _same(spec["base"], env["env"])
    assert _same(finetune.finetune_spec("other-run", tmp_path / "fb.sqlite3")["base"],
                 env["other"])


def test_python_api_evaluation_and_predictor_use_fer_model(env):
    import fer_core
    from fer_core import data, evaluation
    from fer_core.model import FerModel
    from fer_core.predict import Predictor

    model = fer_core.load_model()
    assert model.path.parent.name == ENV_NAME and model.model_id.startswith(f"{ENV_NAME}-")
    assert fer_core.load_model("other-run").path.parent.name == "other-run"
    assert Predictor().model_id == model.model_id
    assert FerModel.load().model_id == model.model_id
    assert evaluation.evaluate(None, data.load(str(env["csv"])), split="val")["model"] == ENV_NAME


# ----------------------------------------------------------------------------- the app

def _page(name: str):
    from streamlit.testing.v1 import AppTest
    return AppTest.from_file(str(ROOT / "pages" / f"{name}.py"), default_timeout=120)


def _picked(at, key: str) -> str:
    box = at.selectbox(key=key)
    return box.options[box.index]


@pytest.mark.parametrize("page,key", [("photo", "photo_model"), ("evaluate", "eval_model"),
                                      ("video", "video_model"), ("models", "models_pick")])
def test_app_pages_default_to_fer_model(env, page, key):
    at = _page(page)
    at.session_state["active_dataset"] = {"source": str(env["csv"]), "strict": True,
                                          "name": "faces"}
    at.run()
    assert not at.exception, at.exception
    assert _picked(at, key) == f"FER_MODEL: {ENV_NAME}"


def test_app_home_names_fer_model_and_pickers_say_when_it_is_wrong(env, monkeypatch):
    from streamlit.testing.v1 import AppTest
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60).run()  # Home
    assert not at.exception, at.exception
    assert "FER_MODEL: env\\-model" in [m.value for m in at.markdown]   # escaped Markdown
    monkeypatch.setenv("FER_MODEL", "no-such-run")
    at = _page("photo").run()
    assert not at.exception, at.exception
    assert any("FER_MODEL is not used" in w.value and "no\\-such\\-run" in w.value
               for w in at.warning), [w.value for w in at.warning]
    assert not _picked(at, "photo_model").startswith("FER_MODEL")
