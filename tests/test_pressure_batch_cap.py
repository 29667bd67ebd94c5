"""The API's micro-batcher never makes a model call larger than ``max_batch`` faces
(``FER_MAX_BATCH``) out of several requests: a request that would not fit waits for the next
call, and one with more faces than the cap alone goes in a call of its own. Each larger call
size costs the model another interpreter (tens of MB), so the cap is what bounds them."""

from __future__ import annotations

import asyncio
import threading

import numpy as np

from fer_core.api.batching import MicroBatcher
from tests.factories import run_coroutine


def _run_requests(sizes, max_batch):
    calls = []
    gate = threading.Event()

    def predict(faces):
        gate.wait(10)  # the first call holds the model while the other requests queue up
        calls.append(len(faces))
        return np.repeat(faces.reshape(len(faces), -1)[:, :1].astype(np.float32), 2, axis=1)

    async def main():
        batcher = MicroBatcher(predict, wait_ms=50, max_batch=max_batch)
        await batcher.start()
        try:
            first = asyncio.create_task(batcher.predict(np.zeros((1, 48, 48), np.uint8)))
            await asyncio.sleep(0.05)  # taken by the consumer, blocked in predict
            tasks = [asyncio.create_task(batcher.predict(np.full((n, 48, 48), i, np.uint8)))
                     for i, n in enumerate(sizes)]
            await asyncio.sleep(0.05)
            gate.set()
            await first
            return await asyncio.gather(*tasks)
        finally:
            await batcher.stop()

    results = run_coroutine(main())
    return calls, results


def test_batches_stay_within_max_batch_and_every_request_gets_its_rows():
    sizes = [3, 3, 1, 2, 3, 1, 1]
    calls, results = _run_requests(sizes, max_batch=4)
    assert calls == [1, 3, 4, 2, 4, 1]  # in order; 3+3, 2+3 would pass 4: the second waits
    for i, (n, probs) in enumerate(zip(sizes, results)):
        assert probs.shape == (n, 2) and (probs == i).all()  # its own rows, in order


def test_a_request_larger_than_max_batch_goes_alone():
    calls, results = _run_requests([2, 6, 1], max_batch=4)
    assert calls == [1, 2, 6, 1]
    assert [r.shape[0] for r in results] == [2, 6, 1]
