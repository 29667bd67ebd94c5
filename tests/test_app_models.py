"""Models page (AppTest): the shipped model and runs listed with their model cards; rename and
delete of runs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.factories import make_tiny_run

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _models_app(monkeypatch, runs_dir):
    from streamlit.testing.v1 import AppTest
    monkeypatch.setenv("FER_RUNS_DIR", str(runs_dir))
    monkeypatch.delenv("FER_MODEL", raising=False)
    return AppTest.from_file(str(ROOT / "pages" / "models.py"), default_timeout=60)


def _pick(at, name: str):
    """Select the run called ``name`` in the page's model picker (the shipped model, when
    present, is listed first)."""
    box = at.selectbox(key="models_pick")
    index = next(i for i, label in enumerate(box.options) if name in label)
    return box.select_index(index).run()


def test_models_page_shows_card_metrics_and_curves(tmp_path, monkeypatch):
    make_tiny_run(tmp_path, "tiny-run", epochs=2)
    at = _pick(_models_app(monkeypatch, tmp_path).run(), "tiny-run")
    assert not at.exception, at.exception
    shown = " ".join(m.value for m in at.markdown)
    assert "Model card: tiny-run" in shown and "Trained on drawn bars only." in shown
    assert any("tiny-run" in str(o) for o in at.selectbox(key="models_pick").options)
    assert len(at.get("plotly_chart")) >= 1          # learning curves from history.jsonl


def test_models_page_renames_and_deletes_a_run(tmp_path, monkeypatch):
    make_tiny_run(tmp_path, "first-run")
    at = _pick(_models_app(monkeypatch, tmp_path).run(), "first-run")
    assert not at.exception, at.exception
    at.text_input(key="models_new_name").set_value("renamed-run")
    at.button(key="models_rename").click().run()
    assert not at.exception, at.exception
    assert (tmp_path / "renamed-run" / "model.keras").is_file()
    assert not (tmp_path / "first-run").exists()
    assert at.button(key="models_delete").disabled, "delete needs the confirmation first"
    at.checkbox(key="models_confirm").check().run()
    at.button(key="models_delete").click().run()
    assert not at.exception, at.exception
    assert not (tmp_path / "renamed-run").exists()
    import fer_core
    if (fer_core.DEFAULT_MODEL / "model.keras").exists():
        assert not any("renamed-run" in str(o) for o in at.selectbox(key="models_pick").options)
    else:
        assert any("No default model yet" in i.value for i in at.info)


def test_models_page_bad_rename_is_a_clear_error(tmp_path, monkeypatch):
    make_tiny_run(tmp_path, "keep-run")
    at = _pick(_models_app(monkeypatch, tmp_path).run(), "keep-run")
    at.text_input(key="models_new_name").set_value("../escape")
    at.button(key="models_rename").click().run()
    assert not at.exception, at.exception
    assert at.error, "a bad run name must show st.error"
    assert (tmp_path / "keep-run").is_dir()


def test_ice_servers_default_none_env_list_and_bad_json(monkeypatch):
    from fer_core.errors import FerError
    from ui.models import ice_servers

    monkeypatch.delenv("FER_ICE_SERVERS", raising=False)
    assert ice_servers() == []
    servers = [{"urls": ["stun:stun.example.org:3478"]}]
    monkeypatch.setenv("FER_ICE_SERVERS", json.dumps(servers))
    assert ice_servers() == servers
    for bad in ("[{oops", '{"urls": "x"}', '[{"username": "u"}]'):
        monkeypatch.setenv("FER_ICE_SERVERS", bad)
        with pytest.raises(FerError, match="FER_ICE_SERVERS"):
            ice_servers()


def test_fer_model_env_is_the_default_choice(tmp_path, monkeypatch):
    from ui.models import model_choices

    a, b = make_tiny_run(tmp_path / "runs", "run-a"), make_tiny_run(tmp_path / "runs", "run-b")
    monkeypatch.setenv("FER_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("FER_MODEL", str(b))
    choices = model_choices()
    assert choices[0].path == b and choices[0].kind == "env"
    assert sum(c.path.resolve() == b.resolve() for c in choices) == 1   # listed once
    assert any(c.path == a and c.kind == "run" for c in choices)
