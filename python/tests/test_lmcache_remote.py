"""kvring://: LMCache's in-process remote-storage plugin path (no MP server),
built by LMCache's own CreateConnector from its config, moving LMCache's own
MemoryObjs through a kvring-server; every byte checked."""

from __future__ import annotations

import asyncio
import os

import pytest
from conftest import Server

pytestmark = pytest.mark.lmcache

if os.environ.get("KVR_REQUIRE_LMCACHE") == "1":
    import lmcache  # noqa: F401
else:
    pytest.importorskip("lmcache")

import torch  # noqa: E402
from lmcache.utils import CacheEngineKey  # noqa: E402
from lmcache.v1.config import LMCacheEngineConfig  # noqa: E402
from lmcache.v1.metadata import LMCacheMetadata  # noqa: E402
from lmcache.v1.storage_backend.connector import CreateConnector  # noqa: E402
from lmcache.v1.storage_backend.local_cpu_backend import LocalCPUBackend  # noqa: E402

from kvring.lmcache_remote import target_uri  # noqa: E402

LAYERS, HEADS, HEAD = 4, 2, 64


def test_target_uri():
    assert target_uri("kvring://10.0.0.2:7700") == "tcp://10.0.0.2:7700"
    assert target_uri("kvring://mem:1G") == "mem:1G"
    assert target_uri("kvring://file:/x/y") == "file:/x/y"
    assert target_uri("kvring://tcp://a:1,b:2") == "tcp://a:1,b:2"
    with pytest.raises(ValueError):
        target_uri("kvring://")
    with pytest.raises(ValueError):
        target_uri("redis://x:1")


def make(url: str):
    config = LMCacheEngineConfig.from_dict(
        {
            "chunk_size": 256,
            "local_cpu": False,
            "max_local_cpu_size": 0.25,
            "remote_url": url,
            "remote_serde": "naive",
            "remote_storage_plugins": ["kvring"],
            "extra_config": {
                "remote_storage_plugin.kvring.module_path": "kvring.lmcache_remote",
                "remote_storage_plugin.kvring.class_name": "KvringConnectorAdapter",
                "save_chunk_meta": False,
            },
        }
    )
    metadata = LMCacheMetadata(
        model_name="m",
        world_size=1,
        local_world_size=1,
        worker_id=0,
        local_worker_id=0,
        kv_dtype=torch.bfloat16,
        kv_shape=(LAYERS, 2, 256, HEADS, HEAD),
    )
    backend = LocalCPUBackend(config, metadata)
    return config, metadata, backend


def test_remote_connector_roundtrip(tmp_path):
    s = Server(tmp_path, "--memory", "256M")
    config, metadata, backend = make("kvring://" + s.uri[len("tcp://") :])

    async def main():
        loop = asyncio.get_running_loop()
        conn = CreateConnector(config.remote_url, loop, backend, config, metadata)
        inner = conn._connector  # LMCache wraps it to count calls
        assert type(inner).__name__ == "KvringRemoteConnector"
        keys = [CacheEngineKey("m", 1, 0, i, torch.bfloat16) for i in range(5)]
        objs = []
        gen = torch.Generator().manual_seed(3)
        for _ in range(4):
            o = backend.allocate(inner.meta_shapes, inner.meta_dtypes, inner.meta_fmt)
            o.raw_data.view(torch.uint8).copy_(
                torch.randint(0, 256, (o.get_size(),), dtype=torch.uint8, generator=gen)
            )
            objs.append(o)
        await conn.batched_put(keys[:3], objs[:3])
        await conn.put(keys[3], objs[3])
        assert await conn.exists(keys[0]) and not await conn.exists(keys[4])
        assert conn.exists_sync(keys[3]) and not conn.exists_sync(keys[4])
        # prefix counts, async and sync (keys[4] was never stored)
        assert await conn.batched_async_contains("l", keys) == 4
        assert conn.batched_contains([keys[4], keys[0]]) == 0
        got = await conn.batched_get(keys)
        assert got[4] is None
        for o, g in zip(objs, got[:4], strict=True):
            assert torch.equal(o.raw_data.view(torch.uint8), g.raw_data.view(torch.uint8))
            g.ref_count_down()
        one = await conn.get(keys[1])
        assert torch.equal(one.raw_data.view(torch.uint8), objs[1].raw_data.view(torch.uint8))
        one.ref_count_down()
        assert await conn.get(keys[4]) is None
        # non-blocking get: the prefix that hit
        got = await conn.batched_get_non_blocking("l", [keys[0], keys[4], keys[1]])
        assert len(got) == 1
        got[0].ref_count_down()
        assert conn.remove_sync(keys[0]) and not conn.remove_sync(keys[0])
        assert not await conn.exists(keys[0])
        for o in objs:
            o.ref_count_down()
        await conn.close()

    asyncio.run(main())
    backend.close()
    assert s.stop() == 0


def test_cancelled_get_keeps_its_objects_until_done(tmp_path):
    """LMCache cancels gets that take too long; the kernel may still be
    writing into their MemoryObjs, so they go back to LMCache only when the
    batch has finished, not at the cancel."""
    s = Server(tmp_path, "--memory", "256M")
    config, metadata, backend = make("kvring://" + s.uri[len("tcp://") :])

    async def main():
        loop = asyncio.get_running_loop()
        conn = CreateConnector(config.remote_url, loop, backend, config, metadata)
        inner = conn._connector
        key = CacheEngineKey("m", 1, 0, 7, torch.bfloat16)
        o = backend.allocate(inner.meta_shapes, inner.meta_dtypes, inner.meta_fmt)
        o.raw_data.view(torch.uint8).fill_(0x11)
        await conn.put(key, o)
        o.ref_count_down()
        s.pause()
        try:
            task = asyncio.ensure_future(inner.batched_get([key]))
            await asyncio.sleep(0.3)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # still the batch's: not handed back while the server may answer
            assert len(inner._pending) == 1
            (_, _, objs) = next(iter(inner._pending.values()))
            assert objs and objs[0].get_ref_count() >= 1
        finally:
            s.resume()
        for _ in range(200):
            if not inner._pending:
                break
            await asyncio.sleep(0.05)
        assert not inner._pending, "the cancelled batch never finished"
        await asyncio.sleep(0.05)  # _resolve runs on the loop
        assert objs[0].get_ref_count() == 0
        await conn.close()

    asyncio.run(main())
    backend.close()
    assert s.stop() == 0
