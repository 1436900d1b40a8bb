"""A served worker's garbage collector: its pauses timed into ``/metrics`` by generation
(``watch_gc_pauses``), and, once its app has started, the started app's objects frozen
out of later collections and the thresholds raised (``settle_heap``); see
docs/benchmarks.md ("Garbage collection in the workers") for why."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest

from api.app import GC_THRESHOLDS, settle_heap
from api.observability import watch_gc_pauses
from api.observability.metrics import REGISTRY, _timing_gc


def collections_timed(generation: int) -> float:
    labels = {"process": "worker", "generation": str(generation)}
    return REGISTRY.get_sample_value("connecfy_gc_pause_seconds_count", labels) or 0.0


@pytest.fixture
def collector() -> Iterator[None]:
    """The process's collector as it was, afterwards."""
    thresholds, callbacks = gc.get_threshold(), list(gc.callbacks)
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)
    gc.callbacks[:] = callbacks


@pytest.mark.usefixtures("collector")
def test_every_collection_is_timed_by_generation() -> None:
    watch_gc_pauses("worker")
    watch_gc_pauses("worker")
    assert gc.callbacks.count(_timing_gc) == 1
    before = [collections_timed(g) for g in range(3)]
    full = {"process": "worker", "generation": "2"}
    seconds_before = REGISTRY.get_sample_value("connecfy_gc_pause_seconds_sum", full) or 0.0
    gc.collect()  # a full collection
    gc.collect(1)
    assert [collections_timed(g) - b for g, b in enumerate(before)] == [0, 1, 1]
    assert (REGISTRY.get_sample_value("connecfy_gc_pause_seconds_sum", full) or 0.0) > seconds_before


@pytest.mark.usefixtures("collector")
def test_a_started_worker_freezes_its_objects_and_collects_less_often() -> None:
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    kept = [object() for _ in range(10)], {"a": [1]}  # a container alive now: frozen with the rest
    asyncio.run(settle_heap(None))  # type: ignore[arg-type]
    assert gc.get_threshold() == GC_THRESHOLDS
    assert gc.get_freeze_count() > 1_000
    assert gc.is_tracked(kept)
    assert all(o is not kept for o in gc.get_objects())  # frozen: in none of the generations collected
