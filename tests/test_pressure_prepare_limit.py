"""The API decodes and searches at most ``prepare_limit`` images at once (two per core), however
many arrive together: the rest wait holding only their bytes. Before, a batch of 12 images ran
all 12 at once (up to the thread pool's 40), and each new peak of concurrent requests raised
glibc's heap high-water for good (issue 25's soak)."""

from __future__ import annotations

import base64
import threading
import time

import cv2
import numpy as np

from fer_core.api.service import ModelService
from fer_core.paths import DEFAULT_MODEL
from fer_core.vision import usable_cores
from tests.factories import make_client


def test_a_batch_of_images_is_prepared_at_most_two_per_core_at_a_time(tmp_path, monkeypatch):
    running, most = [0], [0]
    lock = threading.Lock()

    def prepare(self, data, detect, where="image"):  # the real one, counted while it runs
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            time.sleep(0.1)
            return original(self, data, detect, where)
        finally:
            with lock:
                running[0] -= 1
    original = ModelService.prepare
    monkeypatch.setattr(ModelService, "prepare", prepare)
    image = base64.b64encode(cv2.imencode(".png", np.full((64, 64, 3), 128, np.uint8))[1]
                             .tobytes()).decode()
    limit = 2 * usable_cores()
    n = min(64, max(12, 3 * limit))
    with make_client(tmp_path, DEFAULT_MODEL) as client:
        r = client.post("/v1/predict/batch", json={"images_base64": [image] * n})
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        service = client.app.state.service
    assert [x["index"] for x in results] == list(range(n)) and all(x["ok"] for x in results)
    assert 1 <= most[0] <= limit  # before: all n at once
    assert service.prepare_limit == limit
