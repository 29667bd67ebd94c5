"""Real browser: upload a clip on the Video page, wait for the background job, see the timeline,
download the CSV, and play the annotated video in a <video> element."""

from __future__ import annotations

import csv
import io
import re

import pytest

from fer_core import synthetic
from fer_core.labels import FER7
from tests.factories import ARTIFACTS_DIR

pytestmark = pytest.mark.browser
ANALYSED = re.compile(r"[1-9][0-9]*/[0-9]+ frames")  # the job has analysed frames

TRACES = ("(Array.from(document.querySelectorAll('.js-plotly-plot'))"
          ".map(p => (p.data || []).length))")


def start_analysis(page, server, clip):
    """Open the Video page, upload ``clip`` and press Analyse; returns the page's main area."""
    from playwright.sync_api import expect

    page.goto(f"{server.url}/video")
    main = page.get_by_test_id("stMain")
    expect(main.get_by_role("heading", name="Video").first).to_be_visible(timeout=90_000)
    main.locator("input[type=file]").set_input_files(str(clip))
    expect(main.get_by_text(clip.name)).to_be_visible(timeout=30_000)
    main.get_by_role("button", name="▶ Analyse", exact=True).click()
    return main


def test_upload_analyse_timeline_download_and_play(streamlit_server, page, tmp_path):
    from playwright.sync_api import expect

    clip = synthetic.synthetic_clip(tmp_path / "two faces.mp4", seconds=2.0)
    main = start_analysis(page, streamlit_server, clip)

    done = main.get_by_role("heading", name="Last video")
    expect(done).to_be_visible(timeout=240_000)
    expect(done).to_contain_text("finished")
    # a timeline per face (7 probability lines + the dominant band) and the share chart
    page.wait_for_function(f"{TRACES}.length >= 3", timeout=60_000)
    traces = page.evaluate(TRACES)
    assert sum(1 for n in traces if n >= len(FER7) + 1) == 2, traces
    expect(main.get_by_test_id("stMetric").filter(has_text="faces")).to_contain_text("2")
    page.screenshot(path=str(ARTIFACTS_DIR() / "video-results.png"), full_page=True)

    with page.expect_download(timeout=60_000) as dl:
        main.get_by_role("button", name="frames.csv").click()
    text = open(dl.value.path(), encoding="utf-8").read()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0])[:8 + len(FER7)] == ["frame", "time_s", "face", "x", "y", "w", "h",
                                               "emotion", *FER7]
    # 12 analysed frames; each face counts from its 2nd (confirming) one
    assert {r["face"] for r in rows} == {"1", "2"} and len(rows) == 2 * 11

    # the annotated H.264 video plays in Chromium: it has a size and its time advances
    player = main.locator("video").first
    expect(player).to_be_attached(timeout=30_000)
    player.scroll_into_view_if_needed()
    page.wait_for_function("() => { const v = document.querySelector('video');"
                           " return v && v.readyState >= 1 && v.videoWidth > 0; }",
                           timeout=60_000)
    page.evaluate("() => { const v = document.querySelector('video'); v.muted = true;"
                  " return v.play(); }")
    page.wait_for_function("() => document.querySelector('video').currentTime > 0.3",
                           timeout=30_000)
    size = page.evaluate("() => { const v = document.querySelector('video');"
                         " return [v.videoWidth, v.videoHeight]; }")
    assert size == [640, 480 + 44]


def test_the_job_survives_leaving_the_page_and_cancel_keeps_partial_results(streamlit_server,
                                                                           page, tmp_path):
    from playwright.sync_api import expect

    # 70 px: the default detector (BlazeFace) does not find the 50 px drawn face in 320x240
    clip = synthetic.synthetic_clip(tmp_path / "long.mp4", seconds=300, size=(320, 240), faces=1,
                                face_size=70)
    main = start_analysis(page, streamlit_server, clip)
    expect(main.get_by_text("Analysing")).to_be_visible(timeout=60_000)
    expect(main.get_by_test_id("stProgress")).to_contain_text(ANALYSED, timeout=120_000)

    page.goto(f"{streamlit_server.url}/")  # leave, then come back: the job is still there
    expect(main.get_by_role("heading", name="FER Studio").first).to_be_visible(timeout=60_000)
    page.goto(f"{streamlit_server.url}/video")
    expect(main.get_by_text("Analysing")).to_be_visible(timeout=60_000)
    expect(main.get_by_test_id("stProgress")).to_contain_text(ANALYSED, timeout=60_000)

    main.get_by_role("button", name="Cancel").click()
    done = main.get_by_role("heading", name="Last video")
    expect(done).to_be_visible(timeout=120_000)
    expect(done).to_contain_text("stopped")
    expect(main.get_by_text("stopped on request")).to_be_visible()
    page.wait_for_function(f"{TRACES}.length >= 2", timeout=60_000)
    # the metric labelled exactly "frames" (not the analysis speed in frames/s), once rendered
    label = page.get_by_test_id("stMetricLabel").get_by_text("frames", exact=True)
    frames = main.get_by_test_id("stMetric").filter(has=label)
    expect(frames.get_by_test_id("stMetricValue")).to_have_text(re.compile(r"^\s*\d+\s*$"),
                                                                timeout=30_000)
    n = int(frames.get_by_test_id("stMetricValue").inner_text())
    assert 0 < n < 9000


def test_a_file_that_is_not_a_video_gets_a_clear_message(streamlit_server, page, tmp_path):
    from playwright.sync_api import expect

    bad = tmp_path / "notes [x](http:__a).mp4"
    bad.write_text("these are my meeting notes, not a video\n" * 20)
    page.goto(f"{streamlit_server.url}/video")
    main = page.get_by_test_id("stMain")
    expect(main.get_by_role("heading", name="Video").first).to_be_visible(timeout=90_000)
    main.locator("input[type=file]").set_input_files(str(bad))
    # uploaded (the chip shows a shortened name; its remove button the whole one), then analyse
    expect(main.get_by_role("button", name=f"Remove {bad.name}")).to_be_visible(timeout=30_000)
    main.get_by_role("button", name="▶ Analyse", exact=True).click()
    alert = main.get_by_test_id("stAlert").filter(has_text="Cannot analyse this video")
    expect(alert).to_contain_text("not a video file FFmpeg can read", timeout=60_000)
    expect(alert).to_contain_text("notes [x](http")  # the name shown literally, not a link
    assert alert.locator("a").count() == 0
    assert "meeting notes" not in alert.inner_text()  # the file's content is never echoed
