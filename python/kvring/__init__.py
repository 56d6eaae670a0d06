"""kvring: batched, zero-copy KV-cache object I/O on io_uring, from Python.

A thin layer over libkvring (``include/kvring.h``)::

    import kvring

    with kvring.Engine() as eng:
        pool = bytearray(8 << 20)
        eng.register(pool)                      # once, up front
        t = eng.open("mem:64M")                 # or file:/path, tcp://h:p, rdma://h:p
        mv = memoryview(pool)
        t.put(["a", "b"], [mv[:4096], mv[4096:8192]]).wait()
        res = t.get(["a", "b"], [mv[8192:12288], mv[12288:16384]]).wait()
        assert res == [4096, 4096]

Per-key results are bytes (>= 0) or a negative errno (``-errno.ENOENT`` is a
miss); they never raise. Submission errors raise :class:`Error` (an
``OSError`` with ``.errno``). :mod:`kvring.aio` drives an engine from asyncio;
:mod:`kvring.lmcache` is the LMCache connector.
"""

from __future__ import annotations

import errno as _errno

from ._kvring import (
    MAX_KEY,
    MAX_SGE,
    Batch,
    Connector,
    Engine,
    Error,
    Region,
    Target,
    __version__,
    parse_size,
    strerror,
)

__all__ = [
    "MAX_KEY",
    "MAX_SGE",
    "Batch",
    "Connector",
    "Engine",
    "Error",
    "Region",
    "Target",
    "__version__",
    "errno_name",
    "parse_size",
    "strerror",
]


def errno_name(result: int) -> str:
    """The errno name of a negative per-key result (``-2`` -> ``"ENOENT"``).

    Results >= 0 (bytes) give ``"OK"``; an errno Python does not know gives
    ``"E<number>"``.
    """
    if result >= 0:
        return "OK"
    return _errno.errorcode.get(-result, f"E{-result}")
