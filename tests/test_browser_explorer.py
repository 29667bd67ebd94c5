"""Real browser: the Dataset Explorer on the synthetic demo shows its chart and the sample grid."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.factories import ARTIFACTS_DIR, ROOT

pytestmark = pytest.mark.browser


def test_explorer_shows_chart_and_sample_grid(streamlit_server, page):
    from playwright.sync_api import expect

    page.goto(f"{streamlit_server.url}/explorer")
    main = page.get_by_test_id("stMain")
    expect(main.get_by_role("heading", name="Dataset Explorer")).to_be_visible(timeout=60_000)
    expect(main.get_by_text("Synthetic demo").first).to_be_visible(timeout=90_000)
    # the class-distribution Plotly chart draws one bar group per split
    chart = main.locator(".js-plotly-plot").first
    expect(chart).to_be_visible(timeout=90_000)
    expect(chart.locator("g.trace.bars").first).to_be_attached(timeout=30_000)
    assert chart.locator("g.trace.bars").count() >= 2
    # the sample grid: a page of face thumbnails with their labels
    grid = main.get_by_test_id("stImage").locator("img")
    expect(grid.nth(39)).to_be_visible(timeout=60_000)
    assert grid.nth(0).evaluate("img => img.naturalWidth") == 48
    expect(main.get_by_text("Flagged images")).to_be_visible(timeout=60_000)
    expect(main.get_by_role("heading", name="Samples")).to_be_visible()
    before = grid.nth(0).get_attribute("src")
    main.get_by_role("button", name="Reshuffle").click()
    expect(grid.nth(0)).not_to_have_attribute("src", before, timeout=30_000)
    page.set_viewport_size({"width": 1400, "height": 1500})  # chart and grid in one picture
    page.wait_for_timeout(2000)  # let the last images paint before the screenshot
    shot = ARTIFACTS_DIR() / "explorer.png"
    page.screenshot(path=str(shot), full_page=False)
    if os.environ.get("FER_UPDATE_SCREENSHOTS") == "1":  # refresh the README's picture
        shutil.copyfile(shot, ROOT / "docs" / "screenshot-explorer.png")
    assert shot.stat().st_size > 20_000
