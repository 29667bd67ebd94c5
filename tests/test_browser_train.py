"""Real browser: start a run on the demo data, watch the chart grow, re-attach, stop it."""

from __future__ import annotations

import pytest

from tests.conftest import ARTIFACTS_DIR

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
    arch.click()
    page.get_by_role("option", name="mini_xception", exact=True).click()
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
    expect(main.get_by_test_id("stMetric").filter(has_text="best val accuracy")).to_contain_text("%")
    expect(main.get_by_role("link", name="Evaluate this model")).to_be_visible()
    expect(main.get_by_role("button", name="Start training")).to_be_enabled()
    page.screenshot(path=str(ARTIFACTS_DIR() / "train-done.png"), full_page=True)
