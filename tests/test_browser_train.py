"""Real browser: start a run on the demo data, watch the chart grow, re-attach, stop it; a
training process killed by SIGSEGV leaves the server running and the page explains it."""

from __future__ import annotations

import pytest

from tests.factories import ARTIFACTS_DIR, choose_option

pytestmark = pytest.mark.browser

TRACES = "((document.querySelector('.js-plotly-plot') || {}).data || [])"
# points drawn so far in the live chart (all traces) / in its per-epoch val accuracy trace
POINTS = f"() => {TRACES}.reduce((n, t) => n + (t.x ? t.x.length : 0), 0)"
EPOCH_POINTS = f"() => ({TRACES}.find(t => t.name === 'val (epoch)') || {{x: []}}).x.length"


def _fill(main, label, value):
    box = main.get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Tab")


def test_training_run_shows_live_curves_reattaches_and_stops(streamlit_server, page):
    """A run far too long to finish during the test (1000 epochs), so that every step below
    sees it running whatever the CPU's speed; the Stop button ends it with a saved model."""
    from playwright.sync_api import expect

    page.goto(f"{streamlit_server.url}/train")
    main = page.get_by_test_id("stMain")
    expect(main.get_by_role("heading", name="Train")).to_be_visible(timeout=90_000)
    expect(main.get_by_text("Synthetic demo").first).to_be_visible(timeout=90_000)
    arch = main.get_by_test_id("stSelectbox").filter(has_text="Architecture")
    choose_option(page, arch, "mini_xception", exact=True)
    _fill(main, "Epochs", 1000)
    _fill(main, "Batch size", 32)
    _fill(main, "Max training images (0 = all)", 256)
    main.get_by_role("button", name="Start training").click()

    # live view: progress, metrics and a chart that gains points while the job runs
    expect(main.get_by_text("Training mini_xception")).to_be_visible(timeout=60_000)
    expect(main.get_by_test_id("stProgress")).to_be_visible(timeout=60_000)
    page.wait_for_function(f"({POINTS})() > 4", timeout=120_000)
    first = page.evaluate(POINTS)
    page.wait_for_function(f"({POINTS})() > {first}", timeout=120_000)
    assert page.evaluate(POINTS) > first
    # two finished epochs: the val curve is drawn and a best model has been saved
    page.wait_for_function(f"({EPOCH_POINTS})() >= 2", timeout=180_000)
    expect(main.get_by_text("images/s")).to_be_visible()
    best = main.get_by_test_id("stMetric").filter(has_text="best val accuracy")
    expect(best).to_contain_text("%")
    page.screenshot(path=str(ARTIFACTS_DIR() / "train-live.png"))

    # a reload re-attaches to the running job (state lives in the server's job manager)
    page.reload()
    expect(main.get_by_text("Training mini_xception")).to_be_visible(timeout=60_000)
    page.wait_for_function(f"({EPOCH_POINTS})() >= 2", timeout=60_000)

    # Stop ends the job after the current batch; the summary keeps the best model
    main.get_by_role("button", name="Stop").click()
    done = main.get_by_role("heading", name="Last run")
    expect(done).to_be_visible(timeout=120_000)
    expect(done).to_contain_text("stopped")
    # the summary's metric (the live panel's may still be on screen while the page reruns)
    expect(main.get_by_test_id("stMetric").filter(has_text="best val accuracy").last
           ).to_contain_text("%")
    expect(main.get_by_role("link", name="Evaluate this model")).to_be_visible()
    expect(main.get_by_role("button", name="Start training")).to_be_enabled()
    page.screenshot(path=str(ARTIFACTS_DIR() / "train-done.png"), full_page=True)


def test_a_crashed_training_job_leaves_the_app_serving_and_is_explained(streamlit_server, page):
    """The job's process dies of SIGSEGV mid-training: the server keeps answering, the Train
    page says the run crashed (signal and log lines) and offers Resume, which starts again."""
    import os
    import signal
    import time
    import urllib.request
    from pathlib import Path

    from playwright.sync_api import expect

    from fer_core.jobs import JobRunner

    runner = JobRunner(Path(streamlit_server.env["FER_RUNS_DIR"]))
    page.goto(f"{streamlit_server.url}/train")
    main = page.get_by_test_id("stMain")
    expect(main.get_by_text("Synthetic demo").first).to_be_visible(timeout=90_000)
    _fill(main, "Epochs", 1000)
    _fill(main, "Batch size", 32)
    _fill(main, "Max training images (0 = all)", 256)
    main.get_by_role("button", name="Start training").click()
    expect(main.get_by_text("Training vgg")).to_be_visible(timeout=60_000)

    job = runner.current()
    deadline = time.monotonic() + 180
    while not any(e.type == "progress" for e in job.events()[0]):  # in the middle of training
        assert job.running and time.monotonic() < deadline, job.state()
        time.sleep(0.2)
    pid = job.state()["pid"]
    assert pid != streamlit_server.proc.pid
    os.kill(pid, signal.SIGSEGV)

    done = main.get_by_role("heading", name="Last run")
    expect(done).to_be_visible(timeout=60_000)
    expect(done).to_contain_text("crashed")
    expect(main.get_by_text("killed by SIGSEGV")).to_be_visible()
    expect(main.get_by_test_id("stCode")).to_contain_text("Fatal Python error: Segmentation fault")
    expect(main.get_by_role("button", name="Resume")).to_be_visible()
    expect(main.get_by_role("heading", name="Past runs")).to_be_visible()
    expect(main.get_by_test_id("stException")).to_have_count(0)
    with urllib.request.urlopen(f"{streamlit_server.url}/_stcore/health", timeout=5) as r:
        assert r.status == 200
    assert streamlit_server.proc.poll() is None
    page.screenshot(path=str(ARTIFACTS_DIR() / "train-crashed.png"), full_page=True)

    main.get_by_role("button", name="Resume").click()        # the same run starts again
    expect(main.get_by_text("Training vgg")).to_be_visible(timeout=60_000)
    resumed = runner.current()
    assert resumed.job_dir == job.job_dir and resumed.running
    main.get_by_role("button", name="Stop").click()
    expect(main.get_by_role("heading", name="Last run")).to_contain_text("stopped",
                                                                        timeout=120_000)
