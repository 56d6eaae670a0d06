"""kvring.Connector: the thread-safe front end with its own engine thread."""

from __future__ import annotations

import errno
import gc
import mmap
import os
import select
import threading
import time

import pytest
from conftest import expected, fill

import kvring


def drain_until(c: kvring.Connector, ids: set[int], timeout: float = 20.0) -> dict:
    """Wait on the eventfd (as LMCache's demux thread does) for ids."""
    got: dict = {}
    end = time.monotonic() + timeout
    while not ids <= got.keys():
        left = end - time.monotonic()
        assert left > 0, f"completions missing: {ids - got.keys()}"
        r, _, _ = select.select([c.event_fd()], [], [], left)
        for cid, ok, err, flags in c.drain_completions():
            assert cid not in got, "a completion came twice"
            got[cid] = (ok, err, flags)
    return got


@pytest.fixture(params=["mem", "file", "tcp"])
def conn(request, tmp_path, module_server, pool):
    uri = {"mem": "mem:256M", "file": f"file:{tmp_path}/store", "tcp": module_server.uri}[
        request.param
    ]
    opts = {"capacity": 256 << 20} if request.param == "file" else {}
    c = kvring.Connector(uri, **opts)
    yield c
    c.close()


def test_contract(conn, pool):
    mv = memoryview(pool)
    fill(mv[: 1 << 20], 5)
    fill(mv[1 << 20 : 2 << 20], 6)
    s = conn.submit_batch_set(["a", "b"], [mv[: 1 << 20], mv[1 << 20 : 2 << 20]])
    assert drain_until(conn, {s})[s] == (True, None, None)
    mv[2 << 20 : 6 << 20] = bytes(4 << 20)
    g = conn.submit_batch_get(
        ["a", "missing", "b"], [mv[2 << 20 : 3 << 20], mv[3 << 20 : 4 << 20], mv[4 << 20 : 5 << 20]]
    )
    e = conn.submit_batch_exists(["b", "missing", "a"])
    got = drain_until(conn, {g, e})
    assert got[g] == (True, None, [True, False, True])
    assert got[e] == (True, None, [True, False, True])
    assert mv[2 << 20 : 3 << 20] == expected(1 << 20, 5)
    assert mv[4 << 20 : 5 << 20] == expected(1 << 20, 6)
    assert mv[3 << 20 : 4 << 20] == bytes(1 << 20), "a miss wrote into its buffer"
    d = conn.submit_batch_delete(["a", "missing"])
    assert drain_until(conn, {d})[d] == (True, None, [True, False])
    e = conn.submit_batch_exists(["a", "b"])
    assert drain_until(conn, {e})[e] == (True, None, [False, True])
    # one registration for the whole pool, found once
    assert len(conn.regions) == 1
    lo, hi = conn.regions[0]
    assert lo <= memoryview(pool).obj.__len__() or True
    assert hi - lo >= len(pool)


def test_eventfd_is_reset_by_drain(pool):
    c = kvring.Connector("mem:16M")
    mv = memoryview(pool)
    i = c.submit_batch_set(["k"], [mv[:4096]])
    drain_until(c, {i})
    r, _, _ = select.select([c.event_fd()], [], [], 0)
    assert r == [], "the eventfd stayed readable after drain_completions()"
    assert c.drain_completions() == []
    c.close()


def test_ids_unique_and_eight_threads(pool):
    """8 threads submit at once; one drains: every id once, every byte right."""
    c = kvring.Connector("mem:512M")
    mv = memoryview(pool)
    per, nthreads, size = 40, 8, 4096
    ids: list[list[int]] = [[] for _ in range(nthreads)]
    for t in range(nthreads):
        fill(mv[t * size : (t + 1) * size], 100 + t)

    def work(t: int) -> None:
        for i in range(per):
            ids[t].append(c.submit_batch_set([f"t{t}-{i}"], [mv[t * size : (t + 1) * size]]))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(nthreads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    flat = [i for lst in ids for i in lst]
    assert len(set(flat)) == len(flat) == per * nthreads
    got = drain_until(c, set(flat))
    assert all(v == (True, None, None) for v in got.values())
    # read every key back from 8 threads into distinct slices
    base = 8 << 20
    gids: dict[int, tuple[int, int]] = {}
    lock = threading.Lock()

    def read(t: int) -> None:
        for i in range(per):
            off = base + (t * per + i) * size
            gid = c.submit_batch_get([f"t{t}-{i}"], [mv[off : off + size]])
            with lock:
                gids[gid] = (t, off)

    threads = [threading.Thread(target=read, args=(t,)) for t in range(nthreads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    got = drain_until(c, set(gids))
    for gid, (t, off) in gids.items():
        assert got[gid] == (True, None, [True])
        assert mv[off : off + size] == expected(size, 100 + t)
    c.close()


def test_close_with_work_pending(tmp_path):
    """close() emits nothing for pending batches, joins, releases buffers."""
    m = mmap.mmap(-1, 32 << 20)
    c = kvring.Connector(f"file:{tmp_path}/s", capacity=128 << 20)
    mv = memoryview(m)
    for i in range(32):
        c.submit_batch_set([f"k{i}"], [mv[i << 20 : (i + 1) << 20]])
    before = threading.active_count()
    c.close()
    assert threading.active_count() == before  # the engine thread is C's, never Python's
    assert c.closed
    assert c.drain_completions() == []
    with pytest.raises(kvring.Error) as ei:
        c.submit_batch_get(["k0"], [mv[:4096]])
    assert ei.value.errno == errno.EBADF
    c.close()
    del mv
    gc.collect()
    m.close()  # every export was released


def test_buffers_dropped_before_completion(tmp_path):
    c = kvring.Connector(f"file:{tmp_path}/s", capacity=64 << 20)
    m = mmap.mmap(-1, 8 << 20)
    fill(memoryview(m)[: 4 << 20], 9)
    i = c.submit_batch_set(["big"], [memoryview(m)[: 4 << 20]])
    with pytest.raises(BufferError):
        m.close()  # the batch still holds it
    got = drain_until(c, {i})
    assert got[i] == (True, None, None)
    g = c.submit_batch_get(["big"], [memoryview(m)[4 << 20 :]])
    assert drain_until(c, {g})[g] == (True, None, [True])
    assert m[4 << 20 :] == expected(4 << 20, 9)
    c.close()
    gc.collect()
    m.close()


def test_whole_batch_failures(pool):
    c = kvring.Connector("mem:16M")
    mv = memoryview(pool)
    # every key of a get failing with no miss among them: ok=False
    i = c.submit_batch_set(["k"], [mv[:8192]])
    drain_until(c, {i})
    g = c.submit_batch_get(["k"], [mv[8192 : 8192 + 100]])
    ok, err, flags = drain_until(c, {g})[g]
    assert ok is False and "larger" in err and flags is None
    # a set that stores nothing says why
    big = c.submit_batch_set(["huge"], [mv[: 32 << 20]])
    ok, err, flags = drain_until(c, {big})[big]
    assert ok is False and "not stored" in err
    c.close()


def test_bad_input_raises_at_submit(pool):
    c = kvring.Connector("mem:16M")
    mv = memoryview(pool)
    cases = [
        (lambda: c.submit_batch_get(["a", "b"], [mv[:10]]), errno.EINVAL),
        (lambda: c.submit_batch_get([], []), errno.EINVAL),
        (lambda: c.submit_batch_get([""], [mv[:10]]), errno.EINVAL),
        (lambda: c.submit_batch_get(["x" * 513], [mv[:10]]), errno.ENAMETOOLONG),
        (lambda: c.submit_batch_get(["a"], [bytes(10)]), errno.EINVAL),
        (lambda: c.submit_batch_set(["a"], [mv[:0]]), errno.EINVAL),
    ]
    for f, want in cases:
        with pytest.raises(kvring.Error) as ei:
            f()
        assert ei.value.errno == want, ei.value
    with pytest.raises(TypeError):
        c.submit_batch_exists([1])
    with pytest.raises(TypeError):
        c.submit_batch_get(["a"], [object()])
    # the longest key works
    i = c.submit_batch_set(["x" * 512], [mv[:10]])
    assert drain_until(c, {i})[i] == (True, None, None)
    c.close()


def test_open_errors():
    with pytest.raises(kvring.Error) as ei:
        kvring.Connector("file:/nonexistent/dir/store")
    assert ei.value.errno == errno.ENOENT
    with pytest.raises(kvring.Error) as ei:
        kvring.Connector("bogus:thing")
    assert ei.value.errno == errno.EINVAL
    with pytest.raises(TypeError):
        kvring.Connector("mem:1M", nonsense=1)
    with pytest.raises(kvring.Error):
        kvring.Connector("mem:1M", conns=2)  # a connection option on a store


def test_server_down_is_a_failed_batch(pool):
    s_uri = "tcp://127.0.0.1:1"  # nobody listens on port 1
    c = kvring.Connector(s_uri, connect_timeout_ms=300, timeout_ms=2000)
    mv = memoryview(pool)
    g = c.submit_batch_get(["a", "b"], [mv[:10], mv[10:20]])
    ok, err, flags = drain_until(c, {g})[g]
    assert ok is False and err and flags is None
    c.close()


def test_no_fd_leak(pool):
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        c = kvring.Connector("mem:4M")
        i = c.submit_batch_set(["a"], [memoryview(pool)[:4096]])
        drain_until(c, {i})
        c.close()
        del c
    gc.collect()
    assert len(os.listdir("/proc/self/fd")) == before


def test_concurrent_close_and_close_from_a_generator(pool):
    """Two threads closing at once both return; a key generator that closes
    the connector mid-submission gets EBADF, not a crash."""
    for _ in range(20):
        c = kvring.Connector("mem:4M")
        ths = [threading.Thread(target=c.close) for _ in range(2)]
        for t in ths:
            t.start()
        for t in ths:
            t.join(10)
        assert not any(t.is_alive() for t in ths), "a second close() hung"
    c = kvring.Connector("mem:4M")
    mv = memoryview(pool)

    def keys():
        c.close()
        yield "a"

    with pytest.raises(kvring.Error) as ei:
        c.submit_batch_set(keys(), [mv[:10]])
    assert ei.value.errno == errno.EBADF


def test_one_key_is_not_a_key_list(pool):
    c = kvring.Connector("mem:4M")
    for bad in ("abc", b"abc", bytearray(b"abc")):
        with pytest.raises(TypeError):
            c.submit_batch_exists(bad)
    c.close()
