"""Stopping the background jobs ends every one of them, even a job whose cancellation
was lost on the way (as Python 3.11's ``asyncio.wait_for`` under redis-py can lose one)."""

from __future__ import annotations

import asyncio

from broker.jobs import stop_jobs


async def test_a_job_that_lost_its_cancellation_is_cancelled_again() -> None:
    passes = 0
    swallowed = 0

    async def job() -> None:
        nonlocal passes, swallowed
        while True:
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                if swallowed == 0:  # the first cancellation goes missing, as in wait_for
                    swallowed += 1
                    asyncio.current_task().uncancel()  # type: ignore[union-attr]
                    continue
                raise
            passes += 1

    async def well_behaved() -> None:
        await asyncio.sleep(3600)

    tasks = [asyncio.create_task(job()), asyncio.create_task(well_behaved())]
    await asyncio.sleep(0.05)
    stopping = asyncio.create_task(stop_jobs(tasks))
    # Cancelled once only, the job would run on until something cancelled it again.
    done, _ = await asyncio.wait({stopping}, timeout=2)
    if not done:
        stopping.cancel()
    assert done, f"a job still running after stop_jobs was asked to stop it ({passes} passes)"
    assert swallowed == 1
    assert all(task.cancelled() for task in tasks)
