"""Evaluate page in real Chromium: the confusion matrix is drawn and clicking a cell opens the
gallery of that cell's faces."""

from __future__ import annotations

import re

import pytest

from fer_core.labels import FER7
from tests.factories import ARTIFACTS_DIR, StreamlitServer, make_tiny_run, need_chromium

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def eval_server(tmp_path_factory):
    need_chromium()
    runs = tmp_path_factory.mktemp("eval-browser-runs")
    model = make_tiny_run(runs, "tiny-eval", epochs=3)
    with StreamlitServer(env={"FER_RUNS_DIR": str(runs), "FER_MODEL": str(model)}) as server:
        yield server


def test_confusion_matrix_cell_click_opens_gallery(eval_server, page):
    page.goto(f"{eval_server.url}/evaluate", wait_until="domcontentloaded")
    heading = page.get_by_text(re.compile(r"True angry, predicted disgust: \d+ faces"))
    heading.first.wait_for(timeout=120_000)
    plot = page.locator(".js-plotly-plot").first
    plot.wait_for(timeout=30_000)
    assert plot.locator(".heatmaplayer").count() == 1
    area = plot.locator(".nsewdrag").first.bounding_box()
    # the cell of the largest off-default count (the default selection is angry -> disgust)
    counts = [int(t) for t in plot.locator("text").filter(has_text=re.compile(r"^\d+$"))
              .all_text_contents()]
    assert len(counts) == 49, counts
    best = max((c, k) for k, c in enumerate(counts) if k != 1)[1]
    i, j = divmod(best, 7)
    true_name, pred_name = FER7[i], FER7[j]
    page.mouse.click(area["x"] + (j + 0.5) * area["width"] / 7,
                     area["y"] + (i + 0.5) * area["height"] / 7)
    shown = page.get_by_text(re.compile(rf"True {true_name}, predicted {pred_name}: \d+ faces"))
    shown.first.wait_for(timeout=30_000)
    n = int(re.search(r": (\d+) faces", shown.first.inner_text()).group(1))
    assert n == counts[best] > 0, "the gallery size is the number in the clicked cell"
    # the gallery holds exactly the faces of that cell (up to the 32 shown)
    page.wait_for_timeout(1500)
    panel = page.locator('[role="tabpanel"]:visible').first      # the Confusion matrix tab
    captions = panel.get_by_text(re.compile(rf"{true_name} → {pred_name} \(\d+%\)"))
    assert captions.count() == min(n, 32)
    page.screenshot(path=str(ARTIFACTS_DIR() / "evaluate.png"), full_page=True)


def test_what_it_sees_tab_shows_feature_maps_and_grad_cam_when_opened(eval_server, page):
    from playwright.sync_api import expect

    page.goto(f"{eval_server.url}/evaluate", wait_until="domcontentloaded")
    main = page.get_by_test_id("stMain")
    tab = main.get_by_role("tab", name="What it sees")
    expect(tab).to_be_visible(timeout=120_000)
    expect(main.get_by_text(re.compile(r"^Feature maps of "))).to_have_count(0)
    tab.click()  # the page runs again with this tab open: then it reads the Keras model
    expect(main.get_by_text(re.compile(r"^Feature maps of ")).first).to_be_visible(
        timeout=120_000)
    expect(main.get_by_text(re.compile(r"^Grad-CAM for the predicted class")).first) \
        .to_be_visible(timeout=30_000)
    expect(tab).to_have_attribute("aria-selected", "true")
