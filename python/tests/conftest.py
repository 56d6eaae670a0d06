"""Shared fixtures: memory pools, scratch files and kvring-server processes.

kvring-server is $KVR_SERVER_BIN, else build/tools/kvring-server of the
repository (tests/run.sh builds it before running pytest).
"""

from __future__ import annotations

import ctypes
import gc
import mmap
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def server_bin() -> str:
    path = os.environ.get("KVR_SERVER_BIN") or str(REPO / "build" / "tools" / "kvring-server")
    if not os.access(path, os.X_OK):
        pytest.fail(
            f"kvring-server not found at {path}: build the repository or set KVR_SERVER_BIN"
        )
    return path


def _die_with_parent() -> None:
    """In the child: SIGKILL when the test process dies, however it dies
    (a crashed run must not leave servers behind)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Server:
    """A kvring-server process on 127.0.0.1 (an ephemeral port)."""

    def __init__(self, tmp: Path, *args: str) -> None:
        self.log = tmp / f"server-{os.getpid()}-{time.monotonic_ns()}.log"
        env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}  # a sanitizer run's
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [server_bin(), "--listen", "tcp://127.0.0.1:0", *args],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env=env,
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + 10
        self.uri = ""
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            m = re.search(r"listening (tcp://\S+)", line)
            if m:
                self.uri = m.group(1)
                break
        if not self.uri:
            self.proc.kill()
            raise RuntimeError(f"kvring-server did not start; see {self.log}")

    def pause(self) -> None:
        """SIGSTOP, returning once the process is stopped."""
        os.kill(self.proc.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "T":
                    return
            time.sleep(0.001)
        raise RuntimeError("kvring-server did not stop")

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        return self.proc.returncode


@pytest.fixture
def server(tmp_path):
    s = Server(tmp_path, "--memory", "256M")
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="module")
def module_server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("srv"), "--memory", "512M")
    yield s
    assert s.stop() == 0


@pytest.fixture
def pool():
    """A 64 MiB anonymous mapping: the kind of pool LMCache hands out."""
    m = mmap.mmap(-1, 64 << 20)
    yield m
    gc.collect()  # tracebacks of expected errors hold views in cycles
    m.close()


def fill(buf: memoryview, seed: int) -> None:
    """Deterministic bytes for (seed, offset), fast enough for MiBs."""
    n = len(buf)
    pattern = (seed.to_bytes(8, "little") + bytes(range(248))) * (n // 256 + 2)
    buf[:] = pattern[seed % 256 : seed % 256 + n]


def expected(n: int, seed: int) -> bytes:
    pattern = (seed.to_bytes(8, "little") + bytes(range(248))) * (n // 256 + 2)
    return pattern[seed % 256 : seed % 256 + n]
