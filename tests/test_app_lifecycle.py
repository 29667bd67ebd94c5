"""Models page (AppTest), the model lifecycle: a candidate's comparison with a plain "worse"
warning, promotion only after confirming it, the active model and history, rollback, the API
key when FER_API_KEY is set."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tests.factories import pattern_faces, tiny_keras_run

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="module")
def candidate(tmp_path_factory):
    """runs/{current,cand}: cand carries a real comparison.json whose verdict says worse."""
    from fer_core import compare
    root = tmp_path_factory.mktemp("runs")
    current = tiny_keras_run(root / "current", seed=0)
    cand = tiny_keras_run(root / "cand", seed=1)
    for run in (current, cand):
        (run / "config.json").write_text('{"arch": "tiny"}')   # listed as runs
    ds = pattern_faces(n_per_class=20, seed=2)
    result = compare.compare_models(current, cand, {"val": ds.subset("val"),
                                                    "feedback_holdout": (ds.images[:30],
                                                                         np.full(30, 2))},
                                    n_boot=200, focus=["fear"])
    result["verdict"]["worse"] = ["original val split: accuracy -3.0 points (made up)"]
    compare.write(cand, result)
    return root, current, cand


def page(monkeypatch, root, current, db, key=None):
    from streamlit.testing.v1 import AppTest
    monkeypatch.setenv("FER_RUNS_DIR", str(root))
    monkeypatch.setenv("FER_MODEL", str(current))
    monkeypatch.setenv("FER_FEEDBACK_DB", str(db))
    if key:
        monkeypatch.setenv("FER_API_KEY", key)
    else:
        monkeypatch.delenv("FER_API_KEY", raising=False)
    at = AppTest.from_file(str(ROOT / "pages" / "models.py"), default_timeout=90).run()
    box = at.selectbox(key="models_pick")
    return box.select_index(next(i for i, o in enumerate(box.options) if "cand" in o)).run()


def test_worse_candidate_needs_confirmation_then_promote_and_roll_back(candidate, tmp_path,
                                                                       monkeypatch):
    root, current, cand = candidate
    at = page(monkeypatch, root, current, tmp_path / "fb.sqlite3")
    assert not at.exception, at.exception
    assert any("The candidate is worse" in e.value for e in at.error)
    assert any(h.value == "Candidate vs current" for h in at.subheader)
    assert at.button(key="promote").disabled, "a worse candidate needs the confirmation"
    assert any("Nothing promoted" in m.value for m in at.markdown)
    at.checkbox(key="promote_confirm").check().run()
    at.button(key="promote").click().run()
    assert not at.exception, at.exception
    assert any("Promoted cand-" in s.value for s in at.success)
    assert any("answers with" in m.value and "cand" in m.value for m in at.markdown)
    at.checkbox(key="rollback_confirm").check().run()
    at.button(key="rollback").click().run()
    assert not at.exception, at.exception
    assert any("Rolled back to FER_MODEL" in s.value for s in at.success)
    assert any("Nothing promoted" in m.value for m in at.markdown)


def test_promotion_on_the_page_needs_the_api_key_when_set(candidate, tmp_path, monkeypatch):
    root, current, cand = candidate
    at = page(monkeypatch, root, current, tmp_path / "fb.sqlite3", key="s3cret")
    at.checkbox(key="promote_confirm").check().run()
    at.text_input(key="promote_key").set_value("wrong").run()
    at.button(key="promote").click().run()
    assert not at.exception, at.exception
    assert any("need the API key" in e.value for e in at.error)
    assert any("Nothing promoted" in m.value for m in at.markdown)
