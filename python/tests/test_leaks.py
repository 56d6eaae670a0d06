"""No leaks: Python objects (refcounts), Python-allocated memory
(tracemalloc, which also traces the C part's PyMem_Raw blocks) and fds."""

from __future__ import annotations

import gc
import mmap
import os
import select
import sys
import tracemalloc

import kvring


def traced_growth(fn, rounds: int = 5) -> int:
    """Bytes still allocated after rounds of fn, beyond the first round."""
    fn()
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(rounds):
            fn()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()


def test_engine_batches_leak_nothing(tmp_path):
    m = mmap.mmap(-1, 8 << 20)
    eng = kvring.Engine()
    eng.register(m)
    t = eng.open("mem:32M")
    mv = memoryview(m)
    keys = [f"k{i}" for i in range(256)]
    bufs = [mv[i * 4096 : (i + 1) * 4096] for i in range(256)]
    errs = [bytearray(4)]

    def round_():
        t.put(keys, bufs).wait()
        t.get(keys, bufs).wait()
        t.exists(keys).wait()
        try:
            t.get(["x"], errs)
        except kvring.Error:
            pass

    refs = sys.getrefcount(mv), sys.getrefcount(bufs[0]), sys.getrefcount(keys[0])
    assert traced_growth(round_) < 4096
    now = sys.getrefcount(mv), sys.getrefcount(bufs[0]), sys.getrefcount(keys[0])
    assert now == refs
    eng.close()
    bufs.clear()
    del mv
    gc.collect()
    m.close()


def test_connector_leaks_nothing():
    m = mmap.mmap(-1, 8 << 20)
    c = kvring.Connector("mem:32M")
    mv = memoryview(m)
    keys = [f"k{i}" for i in range(64)]
    bufs = [mv[i * 4096 : (i + 1) * 4096] for i in range(64)]

    def round_():
        ids = {
            c.submit_batch_set(keys, bufs),
            c.submit_batch_get(keys, bufs),
            c.submit_batch_exists(keys),
            c.submit_batch_delete(keys),
        }
        while ids:
            select.select([c.event_fd()], [], [], 5)
            for cid, *_ in c.drain_completions():
                ids.discard(cid)

    round_()  # the pool gets registered (and pinned) once
    refs = sys.getrefcount(bufs[0])
    regions = c.regions
    assert traced_growth(round_, rounds=20) < 4096
    assert c.regions == regions
    now = sys.getrefcount(bufs[0])  # outside the assert: pytest's rewrite holds a ref
    assert now == refs
    c.close()
    bufs.clear()
    del mv
    gc.collect()
    m.close()


def test_fds_back_after_close(tmp_path):
    before = sorted(os.listdir("/proc/self/fd"))
    for _ in range(10):
        with kvring.Engine() as eng:
            eng.open(f"file:{tmp_path}/s", capacity=16 << 20)
    gc.collect()
    assert sorted(os.listdir("/proc/self/fd")) == before
