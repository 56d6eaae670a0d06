"""LMCache's native connector protocol over kvring.

LMCache loads third-party connectors through its ``native_plugin`` L2
adapter: a class with ``event_fd()``, ``submit_batch_get/set/exists/delete``,
``drain_completions()`` and ``close()``. :class:`KvringConnector` is that
class; each submission is one kvring batch on the connector's own engine
thread (see :class:`kvring.Connector`).
"""

from __future__ import annotations

from typing import Any

from ._kvring import Connector

__all__ = ["KvringConnector"]


class KvringConnector(Connector):
    """An LMCache native connector backed by a kvring target.

    ``uri`` is any kvring target: ``mem:SIZE``, ``file:PATH``,
    ``tcp://HOST:PORT[,...]`` (kvring-server nodes) or ``rdma://``. Other
    keyword arguments are the target's and the engine's options (see
    :meth:`kvring.Engine.open`; ``max_objects``, ``ring_entries`` and
    ``engine_timeout_ms`` go to the engine).

    Contract: a get completes ``ok=True`` with one bool per key (a miss is
    ``False`` and leaves its buffer untouched); exists and delete give one
    bool per key; a set gives ``None`` and is ``ok`` when every key was
    stored; ``ok=False`` with a message when the whole batch failed. Ids are
    unique for the connector's life. Submissions may come from any thread;
    completions are taken by ``drain_completions()`` once ``event_fd()`` is
    readable.
    """

    def __init__(self, uri: str = "mem:1G", **opts: Any) -> None:
        super().__init__(uri, **opts)
