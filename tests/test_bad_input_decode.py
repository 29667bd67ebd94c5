"""Decoding without float64 copies, the server-wide pixel budget and the per-request cap."""

from __future__ import annotations

import asyncio
import io

import cv2
import numpy as np
import pytest
from PIL import Image

from fer_core.api.imaging import PixelBudget
from fer_core.api.routers.predict import over_request_budget
from fer_core.vision import decode_image
from tests.factories import run_coroutine


def _png(arr) -> bytes:
    ok, buf = cv2.imencode(".png", arr)
    assert ok
    return buf.tobytes()


def test_16bit_png_keeps_the_high_byte_and_low_values_stay():
    ramp = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)
    got = decode_image(_png(ramp))
    assert got.dtype == np.uint8 and got.shape == (64, 64)
    np.testing.assert_array_equal(got, (ramp >> 8).astype(np.uint8))
    low = np.arange(200, dtype=np.uint16).reshape(10, 20)
    np.testing.assert_array_equal(decode_image(_png(low)), low.astype(np.uint8))


def test_float_and_32bit_grey_tiffs_scale_into_0_255():
    for mode, arr in (("F", np.linspace(0, 1000, 60 * 50, dtype=np.float32).reshape(60, 50)),
                      ("I", np.linspace(0, 200_000, 60 * 50).astype(np.int32).reshape(60, 50))):
        buf = io.BytesIO()
        Image.fromarray(arr, mode=mode).save(buf, format="TIFF")
        got = decode_image(buf.getvalue())
        hi = float(arr.max())
        want = np.clip(arr.astype(np.float64) * 255 / (65535 if hi <= 65535 else hi), 0, 255)
        assert got.dtype == np.uint8
        assert np.abs(got.astype(int) - want.astype(np.uint8)).max() <= 1, mode


def test_transparent_png_is_composited_over_white():
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., :3] = (0, 0, 255)          # BGR red
    rgba[:, :4, 3] = 255                 # left half opaque, right half transparent
    rgba[0, 4, 3] = 128
    got = decode_image(_png(rgba))
    assert got[0, 0].tolist() == [0, 0, 255]
    assert got[1, 7].tolist() == [255, 255, 255]
    assert got[0, 4].tolist() == [127, 127, 255]


def test_pixel_budget_lets_through_only_what_fits():
    async def scenario():
        budget = PixelBudget(100)
        running, peak = 0, 0

        async def job(n):
            nonlocal running, peak
            n_held = min(n, 100)  # an image larger than the budget holds all of it
            async with budget.hold(n):
                running += n_held
                peak = max(peak, running)
                await asyncio.sleep(0.01)
                running -= n_held

        await asyncio.gather(*(job(n) for n in (60, 60, 30, 500, 10, 40)))
        return peak, budget.used

    peak, left = run_coroutine(scenario())
    assert peak == 100 and left == 0


def test_request_pixel_cap_refuses_the_images_past_it():
    big = _png(np.zeros((100, 100), np.uint8))       # 10,000 pixels
    small = _png(np.zeros((10, 10), np.uint8))       # 100 pixels
    items = over_request_budget([big, big, ValueError("bad"), big, small], 25_000)
    assert items[0] is big and items[1] is big and isinstance(items[2], ValueError)
    assert getattr(items[3], "code", None) == "too_many_pixels" and items[3].status == 413
    assert items[4] is small


@pytest.mark.parametrize("mode", ["1", "L", "RGB", "P", "LA", "CMYK"])
def test_every_pil_mode_decodes_to_uint8(mode):
    img = Image.new(mode, (30, 20))
    buf = io.BytesIO()
    img.save(buf, format="TIFF" if mode == "CMYK" else "PNG")
    got = decode_image(buf.getvalue())
    assert got.dtype == np.uint8 and got.shape[:2] == (20, 30)
