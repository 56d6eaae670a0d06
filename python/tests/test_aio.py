"""kvring.aio: batches awaited on an asyncio loop through the engine's fd."""

from __future__ import annotations

import asyncio
import errno
import time

from conftest import expected, fill

import kvring
import kvring.aio


def test_await_every_op(pool, module_server, tmp_path):
    async def main():
        with kvring.Engine() as eng:
            eng.register(pool)
            mv = memoryview(pool)
            for uri, kw in (
                ("mem:64M", {}),
                (f"file:{tmp_path}/s", {"capacity": 64 << 20}),
                (module_server.uri, {}),
            ):
                t = eng.open(uri, **kw)
                fill(mv[: 1 << 20], 21)
                keys = [f"aio-{i}" for i in range(8)]
                bufs = [mv[: 1 << 20]] * 8
                assert await t.aput(keys, bufs) == [1 << 20] * 8
                outs = [mv[(i + 1) << 20 : (i + 2) << 20] for i in range(8)]
                got = await asyncio.gather(t.aget(keys[:4], outs[:4]), t.aget(keys[4:], outs[4:]))
                assert got == [[1 << 20] * 4] * 2
                for o in outs:
                    assert o == expected(1 << 20, 21)
                assert await t.aexists(keys[:2] + ["none"]) == [1 << 20, 1 << 20, -errno.ENOENT]
                assert await kvring.aio.remove(t, keys) == [0] * 8
                t.close()

    asyncio.run(main())


def test_deadline_fires_without_fd_activity(tmp_path):
    """A stalled server: the await ends at the batch deadline (the driver
    wakes for next_timeout(), since a deadline does not make the fd readable)."""
    from conftest import Server

    s = Server(tmp_path, "--memory", "64M")

    async def main():
        with kvring.Engine() as eng:
            t = eng.open(s.uri)
            ba = bytearray(4096)
            eng.register(ba)
            assert await t.aput(["k"], [ba]) == [4096]
            s.pause()
            try:
                t0 = time.monotonic()
                res = await t.aget(["k"], [ba], timeout_ms=500)
                took = time.monotonic() - t0
            finally:
                s.resume()
            assert res == [-errno.ETIMEDOUT]
            assert 0.4 < took < 5

    asyncio.run(main())
    assert s.stop() == 0


def test_submission_error_raises_in_await():
    async def main():
        with kvring.Engine() as eng:
            t = eng.open("mem:1M")
            try:
                await t.aget(["k"], [bytearray(10)])  # not registered
            except kvring.Error as e:
                return e.errno

    assert asyncio.run(main()) == errno.EFAULT


def test_engine_after_engine_on_one_loop():
    """A closed engine's fd number comes back for the next engine: the
    driver of the new one must still be woken."""

    async def main():
        for _ in range(3):
            eng = kvring.Engine()
            t = eng.open("mem:1M")
            ba = bytearray(4096)
            eng.register(ba)
            t0 = time.monotonic()
            assert await t.aput(["k"], [ba]) == [4096]
            assert await t.aget(["k"], [ba]) == [4096]
            assert time.monotonic() - t0 < 2
            eng.close()

    asyncio.run(asyncio.wait_for(main(), 20))
