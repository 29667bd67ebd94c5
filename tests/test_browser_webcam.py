"""Webcam page in real Chromium with a fake camera playing a .y4m of drawn faces."""

from __future__ import annotations

import re
import time

import cv2
import pytest

from fer_core.model import FerModel
from tests.factories import (ARTIFACTS_DIR, StreamlitServer, faces_seen, launch_chromium,
                             make_tiny_run, write_y4m)

pytestmark = pytest.mark.browser


def test_webcam_streams_annotated_frames(playwright_instance, tmp_path):
    video = write_y4m(tmp_path / "faces.y4m")
    runs = tmp_path / "runs"
    model = make_tiny_run(runs, "tiny-cam")
    FerModel.load(model)  # its checked conversion is cached: the app runs it without TensorFlow
    browser = launch_chromium(playwright_instance, [
        "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={video.resolve()}"])
    try:
        with StreamlitServer(env={"FER_RUNS_DIR": str(runs), "FER_MODEL": str(model)}) as server:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(f"{server.url}/webcam", wait_until="domcontentloaded")
            page.get_by_text(re.compile(r"faces seen: 0")).first.wait_for(timeout=90_000)
            frame = page.frame_locator('iframe[title*="webrtc"]')
            frame.get_by_role("button", name="START").click(timeout=60_000)
            video_el = frame.locator("video").first
            deadline = time.time() + 90
            seen = 0
            while time.time() < deadline:
                try:
                    seen = faces_seen(page)
                except Exception:  # noqa: BLE001 - the fragment re-renders every second
                    seen = 0
                if seen >= 5:
                    break
                time.sleep(1)
            assert seen >= 5, "no annotated frames came back from the callback"
            later = time.time() + 20
            more = seen
            while time.time() < later and more <= seen:
                time.sleep(1)
                try:
                    more = faces_seen(page)
                except Exception:  # noqa: BLE001
                    pass
            assert more > seen, "the live count must keep increasing while playing"
            assert video_el.evaluate("v => v.videoWidth") > 0
            # the live chart is drawn beside the video
            page.get_by_text(re.compile(r"Face #\d+: emotion probabilities")).first.wait_for(
                timeout=15_000)
            video_el.screenshot(path=str(ARTIFACTS_DIR() / "webcam.png"))
            page.screenshot(path=str(ARTIFACTS_DIR() / "webcam-page.png"), full_page=True)
            shot = cv2.imread(str(ARTIFACTS_DIR() / "webcam.png"))
            assert shot is not None and shot.shape[0] > 50
            # the overlay is drawn: the returned video is not the plain input (coloured box/
            # label pixels exist, the input is only greys/skin tones)
            hsv = cv2.cvtColor(shot, cv2.COLOR_BGR2HSV)
            assert (hsv[..., 1] > 150).mean() > 0.001, "no coloured overlay in the video"
    finally:
        browser.close()
