"""Worker processes that redact, normalize and validate detail bodies off the client's GIL.

Processing a 7-day detail of 8 GPUs takes ~4.6 ms of CPU that holds the GIL from start to end
(`python -m bench.ingest_paths`), so the client's threads can only take turns at it. A worker
process does it on another CPU: the client's thread that fetched a body sends it down the
worker's stdin and reads back `process.process_body(body)` (a `Processed`, or a retry/give-up
verdict), pickled, from its stdout.

- A worker is `python -m pipeline.workers`, a direct child of the client's process (its CPU
  counts in `RUSAGE_CHILDREN`), started fresh: nothing of the parent's state is inherited or
  re-run (multiprocessing's "spawn" would import the caller's `__main__` again; a fork would
  copy locks other threads hold).
- The known secrets (`redact.known_secrets`, the API key among them) go down the pipe first,
  never in the command line or the environment (`GPUCOST_API_KEY` is left out of the worker's),
  so that a worker redacts what the client would.
- Frames are an 8-byte big-endian length and the bytes. The pickles come only from our own
  worker's code (the provider's bytes are values inside them).
- A worker that dies makes `process` raise `WorkerDied`; the client then processes in its
  threads, as without workers. A body whose processing raises (a bug, not a bad body: those
  become failures) comes back as ("error", ""), and the client processes it in the thread, so
  the error is reported as it would be without workers; the worker prints nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import signal
import struct
import subprocess
import sys
from pathlib import Path
from queue import SimpleQueue
from typing import IO, Any

__all__ = ["ParseWorkers", "WorkerDied"]

_LENGTH = struct.Struct(">Q")
# The folder that holds the `pipeline` package this module belongs to.
_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)


class WorkerDied(Exception):
    """A worker process ended or broke its pipe."""


def _write(stream: IO[bytes], payload: bytes) -> None:
    stream.write(_LENGTH.pack(len(payload)))
    stream.write(payload)
    stream.flush()


def _read(stream: IO[bytes]) -> bytes | None:
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    (size,) = _LENGTH.unpack(head)
    payload = stream.read(size)
    if len(payload) < size:
        return None
    return payload


class _Worker:
    def __init__(self, secrets: tuple[str, ...]) -> None:
        # The worker needs no key: the environment's copy stays with the client. It imports
        # this very `pipeline` package (a checkout run in place, not only an installed one).
        env = {k: v for k, v in os.environ.items() if k != "GPUCOST_API_KEY"}
        env["PYTHONPATH"] = os.pathsep.join(
            [_PACKAGE_ROOT, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.workers"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin: IO[bytes] = self.proc.stdin
        self.stdout: IO[bytes] = self.proc.stdout
        _write(self.stdin, json.dumps(list(secrets)).encode())

    def process(self, body: bytes) -> Any:
        try:
            _write(self.stdin, body)
            reply = _read(self.stdout)
        except (OSError, ValueError) as exc:
            raise WorkerDied(str(exc)) from None
        if reply is None:
            raise WorkerDied(f"the worker ended (exit code {self.proc.poll()})")
        # Pickled by our own worker (`_main`): the provider's bytes are only values inside.
        return pickle.loads(reply)  # noqa: S301

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.stdin.close()  # end of input: the worker exits
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.stdout.close()


class ParseWorkers:
    """`count` worker processes; `process(body)` runs `process.process_body` in an idle one
    (a calling thread waits for one to be free)."""

    def __init__(self, count: int, secrets: tuple[str, ...]) -> None:
        self._all: list[_Worker] = []
        try:
            for _ in range(count):
                self._all.append(_Worker(secrets))
        except BaseException:
            for worker in self._all:  # those already started end with the failure
                worker.close()
            raise
        self._idle: SimpleQueue[_Worker] = SimpleQueue()
        for worker in self._all:
            self._idle.put(worker)
        self.broken = False

    @property
    def pids(self) -> list[int]:
        return [w.proc.pid for w in self._all]

    def process(self, body: bytes) -> Any:
        """The worker's `process_body(body)`; `WorkerDied` when a worker is gone (then every
        later call raises it too)."""
        if self.broken:
            raise WorkerDied("a worker process ended earlier")
        worker = self._idle.get()
        try:
            return worker.process(body)
        except WorkerDied:
            self.broken = True
            raise
        finally:
            self._idle.put(worker)

    def close(self) -> None:
        """End every worker (they exit at the end of their input) and wait for them."""
        for worker in self._all:
            worker.close()


def _main() -> None:
    # Ctrl-C reaches the whole process group: the client handles it and ends this worker by
    # closing its input (no traceback of our own here).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from pipeline.process import process_body
    from pipeline.redact import register_secret

    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    first = _read(stdin)
    if first is None:
        return
    for secret in json.loads(first):
        register_secret(secret)
    while (body := _read(stdin)) is not None:
        try:
            done: Any = process_body(body)
        except Exception:  # noqa: BLE001 - reported by the client, redacted, not here
            # Nothing is printed here (a message could quote the provider's bytes): the client
            # processes this body in its own thread, where the error takes its usual path.
            done = ("error", "")
        _write(stdout, pickle.dumps(done, protocol=pickle.HIGHEST_PROTOCOL))


if __name__ == "__main__":
    _main()
