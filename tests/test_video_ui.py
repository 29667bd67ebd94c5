"""ui.video: figures from a real analysis (its job store is tested in test_video_jobs.py)."""

from __future__ import annotations

import pytest

from fer_core import synthetic, video
from fer_core.labels import FER7
from fer_core.predict import Predictor
from tests.factories import tiny_cnn


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("res")
    clip = synthetic.synthetic_clip(out / "c.mp4", seconds=1.0)
    predictor = Predictor(tiny_cnn(width=8, strides=2), video.detector_config(), labels=FER7)
    video.analyze(clip, out, predictor=predictor, smoothing=0.5)
    return out


def test_timeline_and_share_figures(result):
    from ui import video as uv
    res = uv.results(result)
    s, df = res["summary"], res["frames"]
    fig = uv.timeline_figure(df, 1, FER7, smoothed=True)
    lines = [t for t in fig.data if t.type == "scatter"]
    band = [t for t in fig.data if t.type == "bar"]
    assert [t.name for t in lines] == list(FER7) and len(lines[0].x) == (df["face"] == 1).sum()
    assert sum(len(t.x) for t in band) == (df["face"] == 1).sum()  # one band cell per row
    assert {t.hovertemplate for t in band} == set(df[df["face"] == 1]["emotion_smoothed"])
    share = uv.share_figure(s)
    assert [t.name for t in share.data] == list(FER7)
    assert sum(t.x[0] for t in share.data) == pytest.approx(1, abs=1e-3)
