"""Micro-batching: faces from concurrent requests go to the model in one call.

Requests ``await batcher.predict(faces)``; a single consumer task collects queued faces for up to
``wait_ms`` (or until ``max_batch`` faces), runs ``predict_faces`` once in a worker thread (off the
event loop), and fans the rows back out. While the model runs, new requests queue up, so under
load batches grow by themselves. A request whose faces would take a batch past ``max_batch`` waits
for the next one (a request with more faces than that alone goes in a call of its own): the model
keeps one interpreter per batch size, and each larger size costs memory (see README, "Under
pressure").
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np


class MicroBatcher:
    def __init__(self, predict_faces, wait_ms: float = 2.0, max_batch: int = 64):
        self._predict = predict_faces
        self.wait_s = max(0.0, wait_ms) / 1000.0
        self.max_batch = max(1, int(max_batch))
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fer-batch")
        self.calls = 0
        self.faces = 0

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run(), name="fer-micro-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def predict(self, faces: np.ndarray) -> np.ndarray:
        """Probabilities (N, C) for uint8 faces (N, 48, 48)."""
        faces = np.asarray(faces, dtype=np.uint8)
        if len(faces) == 0:
            return np.zeros((0, 0), dtype=np.float32)
        if self._queue is None:  # not started (e.g. used outside the app): call directly
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._pool, self._predict, faces)
        fut = asyncio.get_running_loop().create_future()
        await self._queue.put((faces, fut))
        return await fut

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        queue = self._queue
        carry = None  # the request that did not fit in the last batch
        while True:
            items = [carry if carry is not None else await queue.get()]
            carry = None
            n = len(items[0][0])
            deadline = time.perf_counter() + self.wait_s
            while n < self.max_batch:
                try:
                    item = queue.get_nowait()
                except asyncio.QueueEmpty:
                    left = deadline - time.perf_counter()
                    if left <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(queue.get(), left)
                    except (asyncio.TimeoutError, TimeoutError):
                        break
                if n + len(item[0]) > self.max_batch:
                    carry = item
                    break
                items.append(item)
                n += len(item[0])
            await self._flush(loop, items)

    async def _flush(self, loop, items) -> None:
        batch = np.concatenate([f for f, _ in items]) if len(items) > 1 else items[0][0]
        try:
            probs = await loop.run_in_executor(self._pool, self._predict, batch)
        except Exception as e:  # hand the error to every waiting request
            for _, fut in items:
                if not fut.done():
                    fut.set_exception(e)
            return
        self.calls += 1
        self.faces += len(batch)
        start = 0
        for faces, fut in items:
            end = start + len(faces)
            if not fut.done():
                fut.set_result(probs[start:end])
            start = end
