"""LMCache's in-process remote-storage plugin path over kvring.

Without LMCache's multiprocess server, LMCache reaches remote storage through
a ``RemoteConnector`` chosen by its ``remote_url``. This module provides one
for ``kvring://`` URLs::

    remote_url: "kvring://10.0.0.2:7700"            # a kvring-server cluster (tcp://)
    remote_storage_plugins: ["kvring"]
    extra_config:
      remote_storage_plugin.kvring.module_path: kvring.lmcache_remote
      remote_storage_plugin.kvring.class_name: KvringConnectorAdapter
      kvring.replicas: 2                            # any target option, "kvring." + name

After ``kvring://`` comes any kvring target: ``mem:8G``, ``file:/path``,
``rdma://host:port``, ``tcp://h1:p1,h2:p2``, or bare ``host:port[,...]``
(taken as ``tcp://``). Each call is one batch of a
:class:`kvring.lmcache.KvringConnector` (its engine thread, no copies), with
completions taken on the asyncio loop through the connector's eventfd.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import select
import threading
from typing import Any

from lmcache.utils import CacheEngineKey
from lmcache.v1.memory_management import MemoryObj
from lmcache.v1.storage_backend.connector import ConnectorAdapter, ConnectorContext
from lmcache.v1.storage_backend.connector.base_connector import RemoteConnector

from .lmcache import KvringConnector

__all__ = ["KvringConnectorAdapter", "KvringRemoteConnector", "target_uri"]

SCHEME = "kvring://"


def target_uri(url: str) -> str:
    """The kvring target URI of a ``kvring://`` URL."""
    if not url.startswith(SCHEME):
        raise ValueError(f"not a kvring URL: {url!r}")
    rest = url[len(SCHEME) :]
    if rest.startswith(("mem:", "file:", "tcp://", "rdma://")):
        return rest
    if not rest:
        raise ValueError(f"{url!r} names no target")
    return "tcp://" + rest


def _options(extra: dict | None) -> dict[str, Any]:
    return {k[len("kvring.") :]: v for k, v in (extra or {}).items() if k.startswith("kvring.")}


class KvringRemoteConnector(RemoteConnector):
    """A RemoteConnector whose every call is one kvring batch."""

    def __init__(self, url: str, loop: asyncio.AbstractEventLoop, local_cpu_backend, config):
        super().__init__(local_cpu_backend.config, local_cpu_backend.metadata)
        self.loop = loop
        self.local_cpu_backend = local_cpu_backend
        self._conn = KvringConnector(target_uri(url), **_options(config.extra_config))
        self._fd = self._conn.event_fd()
        # Submitting and registering the future happen under the lock, and so
        # does draining: a completion can never arrive before its future.
        self._lock = threading.Lock()
        self._pending: dict[int, Any] = {}
        self._closed = False
        try:
            on_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            loop.add_reader(self._fd, self._drain)
        else:
            loop.call_soon_threadsafe(loop.add_reader, self._fd, self._drain)

    # ------------------------------------------------------------ plumbing

    def _drain(self) -> None:
        with self._lock:
            items = self._conn.drain_results()
            done = [(self._pending.pop(i, None), ok, err, res) for i, ok, err, res in items]
        for entry, ok, err, res in done:
            if entry is None:
                continue
            fut, _keepalive, objs = entry
            if isinstance(fut, asyncio.Future):
                self.loop.call_soon_threadsafe(_resolve, fut, ok, err, res, objs)
            else:
                _resolve(fut, ok, err, res, objs)

    def _submit(self, fut, op: str, keys: list[str], bufs=None, objs=None) -> None:
        with self._lock:
            if op == "get":
                cid = self._conn.submit_batch_get(keys, bufs)
            elif op == "set":
                cid = self._conn.submit_batch_set(keys, bufs)
            elif op == "exists":
                cid = self._conn.submit_batch_exists(keys)
            else:
                cid = self._conn.submit_batch_delete(keys)
            self._pending[cid] = (fut, bufs, objs)

    async def _batch(self, op: str, keys: list[str], bufs=None, objs=None) -> list[int]:
        """One batch awaited. objs: MemoryObjs a get writes into; if the
        await is cancelled they are handed back only once the batch is done
        (the kernel may still be writing into them until then)."""
        fut = self.loop.create_future()
        self._submit(fut, op, keys, bufs, objs)
        return await fut

    def _batch_sync(self, op: str, keys: list[str], bufs=None) -> list[int]:
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._submit(fut, op, keys, bufs)
        # Drain here too, so that a caller on the loop's own thread (or
        # with the loop busy) still gets its answer. poll(), not select():
        # the fd may be past FD_SETSIZE in a large process.
        p = select.poll()
        p.register(self._fd, select.POLLIN)
        while not fut.done():
            p.poll(50)
            self._drain()
        return fut.result()

    def _buffers(self, objs: list[MemoryObj]) -> list[memoryview]:
        return [
            o.byte_array if isinstance(o.byte_array, memoryview) else memoryview(o.byte_array)
            for o in objs
        ]

    def _allocate(self, n: int) -> list[MemoryObj]:
        objs = []
        for _ in range(n):
            o = self.local_cpu_backend.allocate(self.meta_shapes, self.meta_dtypes, self.meta_fmt)
            if o is None:
                for x in objs:
                    x.ref_count_down()
                raise RuntimeError("kvring: LMCache's CPU backend has no room for a chunk")
            objs.append(o)
        return objs

    def _landed(self, objs: list[MemoryObj], res: list[int]) -> list[MemoryObj | None]:
        out: list[MemoryObj | None] = []
        for o, r in zip(objs, res, strict=True):
            if 0 < r < o.get_size():
                try:
                    o = self.reshape_partial_chunk(o, r)
                except ValueError:
                    r = -1  # not a whole number of tokens: not a chunk of ours
            if r <= 0:
                o.ref_count_down()  # a miss: handed back to LMCache
                out.append(None)
            else:
                out.append(o)
        return out

    @staticmethod
    def _prefix(res: list[int]) -> int:
        n = 0
        for r in res:
            if r < 0:
                break
            n += 1
        return n

    # --------------------------------------------------- RemoteConnector

    async def exists(self, key: CacheEngineKey) -> bool:
        return (await self._batch("exists", [key.to_string()]))[0] >= 0

    def exists_sync(self, key: CacheEngineKey) -> bool:
        return self._batch_sync("exists", [key.to_string()])[0] >= 0

    async def get(self, key: CacheEngineKey) -> MemoryObj | None:
        return (await self.batched_get([key]))[0]

    async def put(self, key: CacheEngineKey, memory_obj: MemoryObj) -> None:
        await self.batched_put([key], [memory_obj])

    def support_batched_put(self) -> bool:
        return True

    async def batched_put(self, keys: list[CacheEngineKey], memory_objs: list[MemoryObj]) -> None:
        if not keys:
            return
        res = await self._batch("set", [k.to_string() for k in keys], self._buffers(memory_objs))
        bad = [r for r in res if r < 0]
        if bad:
            raise RuntimeError(f"kvring: {len(bad)} of {len(res)} chunks not stored ({bad[0]})")

    def support_batched_get(self) -> bool:
        return True

    async def batched_get(self, keys: list[CacheEngineKey]) -> list[MemoryObj | None]:
        if not keys:
            return []
        objs = self._allocate(len(keys))
        try:
            res = await self._batch("get", [k.to_string() for k in keys], self._buffers(objs), objs)
        except asyncio.CancelledError:
            raise  # the objects go back when the batch is done (_resolve)
        except BaseException:
            for o in objs:
                o.ref_count_down()
            raise
        return self._landed(objs, res)

    def support_batched_contains(self) -> bool:
        return True

    def batched_contains(self, keys: list[CacheEngineKey]) -> int:
        if not keys:
            return 0
        return self._prefix(self._batch_sync("exists", [k.to_string() for k in keys]))

    def support_batched_async_contains(self) -> bool:
        return True

    async def batched_async_contains(
        self, lookup_id: str, keys: list[CacheEngineKey], pin: bool = False
    ) -> int:
        if not keys:
            return 0
        return self._prefix(await self._batch("exists", [k.to_string() for k in keys]))

    def support_batched_get_non_blocking(self) -> bool:
        return True

    async def batched_get_non_blocking(
        self, lookup_id: str, keys: list[CacheEngineKey]
    ) -> list[MemoryObj]:
        got = await self.batched_get(keys)
        out = []
        for i, o in enumerate(got):  # the prefix that hit, as LMCache expects
            if o is None:
                for rest in got[i + 1 :]:
                    if rest is not None:
                        rest.ref_count_down()
                break
            out.append(o)
        return out

    def remove_sync(self, key: CacheEngineKey) -> bool:
        return self._batch_sync("delete", [key.to_string()])[0] == 0

    async def list(self) -> list[str]:
        return []  # kvring has no key listing

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.loop.remove_reader(self._fd)
        self._conn.close()  # joins the engine thread: nothing writes any more
        with self._lock:
            pending, self._pending = self._pending, {}
        for fut, _, objs in pending.values():
            _resolve(fut, False, "connector closed", None, objs)


def _resolve(fut, ok: bool, err: str | None, res: list[int] | None, objs=None) -> None:
    if fut.done():
        # Cancelled: nobody takes the get's objects, and the batch is over,
        # so they go back to LMCache now.
        for o in objs or ():
            o.ref_count_down()
        return
    if ok:
        fut.set_result(res)
    else:
        fut.set_exception(RuntimeError(f"kvring: {err}"))


class KvringConnectorAdapter(ConnectorAdapter):
    """Makes a KvringRemoteConnector for ``kvring://`` URLs."""

    def __init__(self) -> None:
        super().__init__(SCHEME)

    def create_connector(self, context: ConnectorContext) -> RemoteConnector:
        return KvringRemoteConnector(
            context.url, context.loop, context.local_cpu_backend, context.config
        )
