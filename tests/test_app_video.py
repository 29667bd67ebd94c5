"""Video page (AppTest): pick a clip from data/, analyse it as a background job, see results."""

from __future__ import annotations

import time

from streamlit.testing.v1 import AppTest

from tests.factories import ROOT

PAGE = str(ROOT / "pages" / "video.py")


def test_video_page_analyses_a_clip_from_data(tmp_path, monkeypatch):
    from fer_core import synthetic
    from ui import video as uv

    monkeypatch.setenv("FER_RUNS_DIR", str(tmp_path / "runs"))
    data = tmp_path / "data"
    data.mkdir()
    synthetic.synthetic_clip(data / "two faces.mp4", seconds=1.0)
    monkeypatch.setattr(uv, "DATA_DIR", data)

    at = AppTest.from_file(PAGE, default_timeout=120).run()
    assert not at.exception, at.exception
    assert at.title[0].value == "🎞️ Video"
    at.radio(key="video_src").set_value("From data/")
    at.selectbox(key="video_pick").set_value(data / "two faces.mp4")
    at.toggle(key="video_annotate").set_value(False)
    next(b for b in at.button if "Analyse" in b.label).click()
    at.run()
    assert not at.exception, at.exception
    handle = uv.current()
    assert handle is not None, [e.value for e in at.error]
    assert handle.wait(timeout=300), "the video job did not finish"
    time.sleep(0.2)
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["faces"] == "2", metrics
    assert int(metrics["frames"]) >= 25
    assert len(at.get("plotly_chart")) >= 3  # a timeline per face and the share of time
    assert "two faces" in at.subheader[0].value
