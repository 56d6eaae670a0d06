"""asyncio helpers: drive a kvring Engine from an event loop.

The engine's fd is watched with ``loop.add_reader``; when it is readable, or
when the engine's next deadline comes, the driver polls the engine without
blocking. Awaiting a batch submits it and returns its per-key results::

    results = await kvring.aio.get(target, keys, buffers)

Everything runs on the loop's thread, which must be the engine's thread.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Sequence
from typing import Any

from ._kvring import Engine, Target

__all__ = ["Driver", "driver", "put", "get", "exists", "remove"]

_drivers: weakref.WeakKeyDictionary[Engine, Driver] = weakref.WeakKeyDictionary()


class Driver:
    """Polls one Engine from one asyncio loop (use :func:`driver`)."""

    def __init__(self, engine: Engine, loop: asyncio.AbstractEventLoop) -> None:
        self.engine = engine
        self.loop = loop
        self._timer: asyncio.TimerHandle | None = None
        self._pending = 0
        self._fd = engine.fd
        # A reader left on this number by a closed engine (whose fd the
        # kernel gave out again) would keep the new one out of the
        # selector: drop it first.
        loop.remove_reader(self._fd)
        loop.add_reader(self._fd, self._poll)

    def close(self) -> None:
        """Stop watching the engine (pending awaits are not resolved)."""
        if self._timer:
            self._timer.cancel()
            self._timer = None
        if self._fd >= 0:
            self.loop.remove_reader(self._fd)
            self._fd = -1

    def _poll(self) -> None:
        if self.engine.closed:
            self.close()
            return
        while self.engine.poll(0):
            pass
        self._arm()

    def _arm(self) -> None:
        # Deadlines do not make the fd readable: wake up for the next one.
        if self._timer:
            self._timer.cancel()
            self._timer = None
        if self._pending:
            ms = self.engine.next_timeout()
            if ms >= 0:
                self._timer = self.loop.call_later(ms / 1000.0, self._poll)

    def _done(self, fut: asyncio.Future[list[int]], batch: Any) -> None:
        self._pending -= 1
        if not fut.done():
            fut.set_result(batch.results)

    async def submit(
        self,
        target: Target,
        op: str,
        keys: Sequence[str | bytes],
        buffers: Any = None,
        timeout_ms: int = 0,
    ) -> list[int]:
        """Submit one batch on target and await its per-key results.

        Cancelling the await does not cancel the batch: its buffers stay held
        until it finishes. Raises what the Target method raises.
        """
        fut: asyncio.Future[list[int]] = self.loop.create_future()
        method = getattr(target, op)
        args = (keys,) if buffers is None else (keys, buffers)
        method(*args, timeout_ms=timeout_ms, callback=lambda b: self._done(fut, b))
        self._pending += 1
        # The batch's I/O is handed to the kernel by the next poll.
        self.loop.call_soon(self._poll)
        return await fut


def driver(engine: Engine) -> Driver:
    """The Driver of engine on the running loop (created on first use)."""
    loop = asyncio.get_running_loop()
    d = _drivers.get(engine)
    if d is None or d.loop is not loop or d._fd < 0:
        if d is not None:
            d.close()
        d = Driver(engine, loop)
        _drivers[engine] = d
    return d


async def put(target: Target, keys: Sequence[str | bytes], buffers: Any, timeout_ms: int = 0):
    """Await Target.put(): per key, bytes stored or a negative errno."""
    return await driver(target.engine).submit(target, "put", keys, buffers, timeout_ms)


async def get(target: Target, keys: Sequence[str | bytes], buffers: Any, timeout_ms: int = 0):
    """Await Target.get(): per key, bytes written or a negative errno."""
    return await driver(target.engine).submit(target, "get", keys, buffers, timeout_ms)


async def exists(target: Target, keys: Sequence[str | bytes], timeout_ms: int = 0):
    """Await Target.exists(): per key, the stored length or -ENOENT."""
    return await driver(target.engine).submit(target, "exists", keys, None, timeout_ms)


async def remove(target: Target, keys: Sequence[str | bytes], timeout_ms: int = 0):
    """Await Target.remove(): per key, 0 or -ENOENT."""
    return await driver(target.engine).submit(target, "remove", keys, None, timeout_ms)
