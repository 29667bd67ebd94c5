"""The decoded-pixel budget holds across processes (``serve --workers N``): a real second process
holding pixels in the shared folder makes this one wait until it releases them, and a holder
killed with ``kill -9`` gives its pixels back."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap

import pytest

from fer_core.api.imaging import PixelBudget, SharedPixelBudget, decode_budget
from tests.factories import ROOT, run_coroutine

HOLDER = textwrap.dedent("""
    import asyncio, sys
    from fer_core.api.imaging import SharedPixelBudget

    async def main():
        async with SharedPixelBudget(100, sys.argv[1]).hold(int(sys.argv[2])):
            print("held", flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    asyncio.run(main())
""")


@pytest.fixture
def holder(tmp_path):
    """A second process holding ``pixels`` of a capacity-100 budget in ``tmp_path``."""
    procs = []

    def start(pixels: int) -> subprocess.Popen:
        p = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path), str(pixels)],
                             cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs.append(p)
        assert p.stdout.readline() == "held\n"
        return p

    yield start
    for p in procs:
        p.kill()
        p.wait(30)


async def _entered(budget, pixels: int, timeout: float) -> bool:
    async def take():
        async with budget.hold(pixels):
            return True
    try:
        return await asyncio.wait_for(take(), timeout)
    except (asyncio.TimeoutError, TimeoutError):
        return False


def test_a_hold_waits_for_another_process_then_enters(tmp_path, holder):
    other = holder(80)
    budget = SharedPixelBudget(100, tmp_path)
    assert budget.used == 80

    async def scenario():
        assert await _entered(budget, 20, 5)  # fits beside the other process's 80
        waiting = asyncio.create_task(_entered(budget, 50, 60))
        done, _ = await asyncio.wait({waiting}, timeout=0.5)
        assert not done  # 80 + 50 > 100: it waits for the other process
        other.stdin.write("release\n")
        other.stdin.flush()
        assert await waiting
    run_coroutine(scenario())
    assert other.wait(30) == 0
    assert budget.used == 0 and not list(tmp_path.glob("*.hold"))


def test_pixels_of_a_killed_holder_are_taken_back(tmp_path, holder):
    other = holder(90)
    budget = SharedPixelBudget(100, tmp_path)

    async def scenario():
        waiting = asyncio.create_task(_entered(budget, 50, 60))
        done, _ = await asyncio.wait({waiting}, timeout=0.5)
        assert not done
        other.send_signal(signal.SIGKILL)  # ends without releasing
        assert await waiting
    run_coroutine(scenario())
    assert other.wait(30) == -signal.SIGKILL
    assert budget.used == 0 and not list(tmp_path.glob("*.hold"))


def test_one_image_larger_than_the_budget_goes_alone(tmp_path):
    budget = SharedPixelBudget(100, tmp_path)

    async def scenario():
        async with budget.hold(10_000):  # clamped to the capacity: alone, not refused forever
            assert budget.used == 100
            assert not await _entered(budget, 1, 0.3)
        assert await _entered(budget, 1, 5)
    run_coroutine(scenario())


def test_the_app_shares_the_budget_only_when_given_a_folder(tmp_path):
    assert isinstance(decode_budget(100, None), PixelBudget)
    shared = decode_budget(100, tmp_path / "b")
    assert isinstance(shared, SharedPixelBudget) and (tmp_path / "b").is_dir()
