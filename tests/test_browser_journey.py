"""A user's whole journey in one server and one browser session, pages opened from the sidebar.

Home -> Dataset Explorer (demo, then an uploaded FER2013-format CSV) -> Train (start a job) ->
Evaluate -> Photo (upload a face, then switch the face detector to Haar) -> Webcam (fake camera,
START, annotated frames) -> Video (upload a clip, the background job finishes, a timeline) ->
Models (fine-tune the trained run on the feedback store's corrections as a job, one epoch, then
its comparison).
Pages are reached by clicking the sidebar links, never by loading a URL, so the session state
carries over as it does for a user: the CSV chosen in the explorer is the dataset of Train and
Evaluate, and the browser document is never reloaded. After every step the server process is
alive, answers /_stcore/health, and the page shows no exception box.
"""

from __future__ import annotations

import contextlib

import re
import time
import urllib.request

import cv2
import pytest

from fer_core.data.fer2013 import to_csv_bytes
from tests.factories import (ARTIFACTS_DIR, StreamlitServer, choose_option, face_image, faces_seen,
                             launch_chromium, pattern_faces, write_y4m)

pytestmark = pytest.mark.browser

CSV_NAME = "fer-journey.csv"
PER_CLASS = 30                       # faces per class and split: 7 * 30 * 3 = 630 rows
N_FACES = 7 * PER_CLASS * 3


class Journey:
    """The browser page, the server and the files a user brings along."""

    def __init__(self, page, server, tmp_path):
        self.page, self.server, self.tmp = page, server, tmp_path
        self.main = page.get_by_test_id("stMain")

    def open(self, title: str):
        """Click ``title`` in the sidebar navigation and wait for the page's heading."""
        from playwright.sync_api import expect

        nav = self.page.get_by_test_id("stSidebarNav")
        heading = self.main.get_by_role("heading", name=title).first
        nav.get_by_role("link", name=title).click()
        try:
            expect(heading).to_be_visible(timeout=30_000)
        except AssertionError:  # a click that landed while a rerun was ending: click again
            nav.get_by_role("link", name=title).click()
            expect(heading).to_be_visible(timeout=90_000)

    def wait_idle(self, timeout: float = 120):
        """Wait until the script run ends (Streamlit's status widget disappears)."""
        self.page.wait_for_timeout(500)
        self.page.get_by_test_id("stStatusWidget").wait_for(state="hidden",
                                                            timeout=timeout * 1000)


def server_alive(server: StreamlitServer, step: str) -> None:
    if server.proc.poll() is not None:
        log = server.log.name
        server.log.flush()
        with open(log) as f:
            text = f.read()
        fault = text.find("Fatal Python error")
        pytest.fail(f"the Streamlit server died during '{step}' (exit code "
                    f"{server.proc.returncode}); from {log}:\n"
                    f"{text[fault:fault + 1500] if fault >= 0 else text[-1500:]}")


def server_ok(journey: Journey, step: str) -> None:
    """The server survived ``step``: process alive, health 200, no exception on the page."""
    server = journey.server
    server_alive(server, step)
    with urllib.request.urlopen(f"{server.url}/_stcore/health", timeout=10) as r:
        assert r.status == 200, f"health check after '{step}' answered {r.status}"
    errors = journey.page.locator('[data-testid="stException"]')
    assert errors.count() == 0, (f"exception shown after '{step}': "
                                 f"{errors.first.inner_text()[:1500]}")
    journey.page.screenshot(path=str(ARTIFACTS_DIR() / f"journey-{step}.png"))


# --- steps, in the order a user clicks through the sidebar -----------------------------------

def home(j: Journey):
    from playwright.sync_api import expect

    j.page.goto(j.server.url, wait_until="domcontentloaded")   # the only URL load
    expect(j.main.get_by_role("heading", name="FER Studio")).to_be_visible(timeout=90_000)
    expect(j.main.get_by_text("Synthetic demo").first).to_be_visible(timeout=30_000)
    j.page.evaluate("window.__journey = 1")   # gone if any later step reloads the page


def explorer(j: Journey):
    from playwright.sync_api import expect

    j.open("Dataset Explorer")
    expect(j.main.get_by_text("Synthetic demo").first).to_be_visible(timeout=90_000)
    expect(j.main.locator(".js-plotly-plot").first).to_be_visible(timeout=90_000)
    j.wait_idle()
    # a FER2013-format CSV, uploaded as a user would
    ds = pattern_faces(n_per_class=PER_CLASS, splits=("train", "val", "test"))
    csv = j.tmp / CSV_NAME
    csv.write_bytes(to_csv_bytes(ds.images, ds.labels, ds.split))
    choose_option(j.page, j.main.get_by_test_id("stSelectbox").filter(has_text="Dataset").first,
                  "Upload a file…")
    j.main.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(str(csv))
    faces = j.main.get_by_test_id("stMetric").filter(has_text="Faces").first
    expect(faces).to_contain_text(f"{N_FACES:,}", timeout=90_000)
    # .last: during the rerun Streamlit can still show the demo set's section beside the new one
    expect(j.main.get_by_text("Flagged images").last).to_be_visible(timeout=90_000)
    j.wait_idle()


def train(j: Journey):
    from playwright.sync_api import expect

    j.open("Train")
    # the dataset chosen in the explorer is still this session's dataset
    expect(j.main.get_by_text(f"{N_FACES:,} faces").first).to_be_visible(timeout=60_000)
    for label, value in (("Epochs", 2), ("Max training images (0 = all)", 256)):
        box = j.main.get_by_label(label, exact=True)
        box.fill(str(value))
        box.press("Tab")
    j.main.get_by_role("button", name="Start training").click()
    # running (progress bar) or already finished (the last run's summary)
    started = j.main.get_by_test_id("stProgress").or_(
        j.main.get_by_role("heading", name="Last run"))
    expect(started.first).to_be_visible(timeout=120_000)


def evaluate(j: Journey):
    from playwright.sync_api import expect

    j.open("Evaluate")
    expect(j.main.get_by_text(f"{N_FACES:,} faces").first).to_be_visible(timeout=60_000)
    accuracy = j.main.get_by_test_id("stMetric").filter(has_text="Accuracy").first
    expect(accuracy).to_contain_text("%", timeout=180_000)
    j.wait_idle(180)


def photo(j: Journey):
    from playwright.sync_api import expect

    j.open("Photo")
    png = j.tmp / "face.png"
    cv2.imwrite(str(png), face_image())
    j.main.get_by_test_id("stFileUploaderDropzoneInput").first.set_input_files(str(png))
    expect(j.main.get_by_text("1 face found")).to_be_visible(timeout=120_000)  # BlazeFace
    j.wait_idle()
    # the detector choice: the 2001 Haar cascade finds the same face
    choose_option(j.page, j.main.get_by_test_id("stSelectbox").filter(
        has_text="Face detector").first, "Haar cascade (2001, fastest)")
    j.wait_idle()
    expect(j.main.get_by_role("combobox", name="Face detector")).to_have_value(
        "Haar cascade (2001, fastest)", timeout=60_000)
    expect(j.main.get_by_text("1 face found")).to_be_visible(timeout=120_000)
    j.wait_idle()


def webcam(j: Journey):
    from playwright.sync_api import expect

    j.open("Webcam")
    expect(j.main.get_by_text(re.compile(r"faces seen: 0")).first).to_be_visible(timeout=90_000)
    frame = j.page.frame_locator('iframe[title*="webrtc"]')
    frame.get_by_role("button", name="START").click(timeout=60_000)
    deadline, seen = time.time() + 90, 0
    while time.time() < deadline and seen < 3:
        try:
            seen = faces_seen(j.page)
        except Exception:  # noqa: BLE001 - the live panel re-renders every second
            seen = 0
        time.sleep(1)
    assert seen >= 3, "no annotated frames came back from the webcam callback"
    assert frame.locator("video").first.evaluate("v => v.videoWidth") > 0
    frame.get_by_role("button", name="STOP").click(timeout=30_000)
    j.wait_idle()


def video(j: Journey):
    from playwright.sync_api import expect

    from fer_core.synthetic import synthetic_clip

    j.open("Video")
    clip = synthetic_clip(j.tmp / "interview.mp4", seconds=2.0)
    j.main.get_by_test_id("stFileUploaderDropzoneInput").first.set_input_files(str(clip))
    expect(j.main.get_by_text(clip.name)).to_be_visible(timeout=60_000)  # uploaded, then analyse
    j.main.get_by_role("button", name="▶ Analyse", exact=True).click()
    done = j.main.get_by_role("heading", name="Last video")
    expect(done).to_contain_text("finished", timeout=240_000)
    expect(j.main.locator(".js-plotly-plot").first).to_be_visible(timeout=60_000)
    j.wait_idle()


def models(j: Journey):
    from playwright.sync_api import expect

    # the run started on the Train page must have ended (on a loaded machine it can still be
    # training here, and the Models page lists a run only once it has a model.keras)
    j.open("Train")
    expect(j.main.get_by_role("heading", name="Last run")).to_be_visible(timeout=300_000)
    j.open("Models")
    expect(j.main.get_by_test_id("stDataFrame").first).to_be_visible(timeout=60_000)
    expect(j.main.get_by_role("tab", name="Model card")).to_be_visible(timeout=60_000)
    # fine-tune the run trained on the Train page from the store's corrections (one epoch)
    pick_model(j, re.compile(r"^Run: .*\(vgg"))
    j.main.get_by_role("tab", name="Fine-tune & promote").click()
    box = j.main.get_by_label("Fine-tuning epochs", exact=True)
    box.fill("1")
    box.press("Tab")
    j.wait_idle()
    j.main.get_by_role("button", name="Start fine-tuning").click()
    expect(j.main.get_by_text("Fine-tuning finished")).to_be_visible(timeout=300_000)
    pick_model(j, re.compile(r"^Run: .*-finetune"))
    j.main.get_by_role("tab", name="Fine-tune & promote").click()
    expect(j.main.get_by_role("heading", name="Candidate vs current")).to_be_visible(
        timeout=60_000)
    verdict = re.compile(r"The candidate is (worse|better)|No clear difference")
    expect(j.main.get_by_text(verdict).first).to_be_visible(timeout=30_000)
    expect(j.main.get_by_role("button", name=re.compile(r"^Promote "))).to_be_visible()


def pick_model(j: Journey, name):
    choose_option(j.page, j.main.get_by_test_id("stSelectbox").filter(has_text="Model").first,
                  name)
    j.wait_idle()


def feedback_store(path):
    """A SQLite feedback store holding a few corrections (fear and happy faces)."""
    from fer_core.api.feedback_store import FeedbackStore
    store = FeedbackStore(path)
    ds = pattern_faces(n_per_class=10, seed=3, splits=("train",))
    for face, label in zip(ds.images, ds.labels):
        if label in (2, 3):
            store.add(face, ("fear", "happy")[label - 2])
    store.close()
    return path


STEPS = [home, explorer, train, evaluate, photo, webcam, video, models]


@contextlib.contextmanager
def fresh_journey(playwright_instance, tmp_path):
    """A new server and a Chromium with the fake camera: the :class:`Journey` of one user."""
    video = write_y4m(tmp_path / "faces.y4m")
    browser = launch_chromium(playwright_instance, [
        "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={video.resolve()}"])
    env = {"FER_RUNS_DIR": str(tmp_path / "runs"), "PYTHONFAULTHANDLER": "1",
           "FER_FEEDBACK_DB": str(feedback_store(tmp_path / "feedback.sqlite3"))}
    try:
        with StreamlitServer(env=env) as server:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.set_default_timeout(90_000)  # clicks and uploads on a busy 2-core machine
            yield Journey(page, server, tmp_path)
    finally:
        browser.close()


def test_user_journey_through_every_page_on_one_server(playwright_instance, tmp_path):
    with fresh_journey(playwright_instance, tmp_path) as journey:
        page, server = journey.page, journey.server
        for step in STEPS:
            try:
                step(journey)
            except Exception:
                server_alive(server, step.__name__)   # a dead server explains the failure
                page.screenshot(path=str(ARTIFACTS_DIR() / f"journey-FAILED-{step.__name__}.png"),
                                full_page=True)
                raise
            server_ok(journey, step.__name__)
        # one browser document all the way: no step reloaded the page (and the session)
        assert page.evaluate("window.__journey") == 1


def test_journey_visits_every_page_in_sidebar_order():
    """Each page the router lists has a step, in the router's order."""
    import ast

    from tests.factories import ROOT

    tree = ast.parse((ROOT / "streamlit_app.py").read_text())
    pages = next(node.value for node in ast.walk(tree) if isinstance(node, ast.Assign)
                 and getattr(node.targets[0], "id", None) == "PAGES")
    files = [ast.literal_eval(elt)[0] for elt in pages.elts]
    steps = [f"pages/{s.__name__}.py" for s in STEPS]
    assert steps == [f for f in files if f in steps]
    assert set(files) == set(steps), "a page of the router has no step"


def test_deep_link_on_a_fresh_server_then_webcam(playwright_instance, tmp_path):
    """A fresh server whose first request is a deep link to a page that loads TensorFlow (the
    page file runs alone before the router ever ran), then the Webcam page: the server lives."""
    from playwright.sync_api import expect

    with fresh_journey(playwright_instance, tmp_path) as journey:
        journey.page.goto(f"{journey.server.url}/train")
        expect(journey.main.get_by_role("heading", name="Train").first).to_be_visible(
            timeout=120_000)
        journey.wait_idle()
        server_ok(journey, "deep-link-train")
        journey.open("Webcam")
        journey.wait_idle()
        server_ok(journey, "deep-link-then-webcam")


def test_every_page_imports_ui_first():
    """The guard of the deep-link test above, for every page: its first import is ``ui``."""
    import ast

    from tests.factories import ROOT

    for path in sorted((ROOT / "pages").glob("*.py")):
        first = next(n for n in ast.parse(path.read_text()).body
                     if isinstance(n, (ast.Import, ast.ImportFrom)))
        assert isinstance(first, ast.Import) and first.names[0].name == "ui", (
            f"{path.name}: the first import must be 'import ui' (see ui/__init__.py)")
