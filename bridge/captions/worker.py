"""Recognition off the event loop: a small pool of worker processes.

The recognisers are C code that keeps the GIL while it decodes (pocketsphinx holds it
for tens of milliseconds at a time), so a thread would still delay the 20 ms tick.
Worker processes (``bridge.captions.worker.main`` in a fresh interpreter, started with asyncio's
subprocess support: no threads, no fork of the bridge) do the resampling and the
recognition; the event loop only writes 100 ms chunks of 48 kHz PCM to a pipe and reads
text back.

One :class:`CaptionPool` per bridge serves every stage. Each utterance (one speaker,
from the start of speech to the end) is an id; all of its audio goes to one worker,
which keeps a free list of recognisers so a new utterance does not reload the model.

Messages are length-prefixed pickles over the worker's stdin/stdout (the worker's own
stdout is moved to stderr so library output cannot corrupt them).
Main → worker: ``("audio", utt, pcm48)``, ``("end", utt)``, ``("cancel", utt)``,
``("stop",)``.
Worker → main: ``("ready", partials)``, ``("error", message)``,
``("partial", utt, text)``, ``("final", utt, text, busy_seconds, audio_seconds)``,
``("failed", utt, message)``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import struct
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from .recognizer import CaptionsError, Recognizer, check_engine, load_engine
from .resample import Downsampler

log = logging.getLogger(__name__)

#: a partial caption is looked for after this much new audio (seconds)
PARTIAL_EVERY_SECONDS = 0.4
START_TIMEOUT = 120.0
#: audio waiting in a pipe to a worker beyond this (bytes) is dropped: the worker is
#: behind, and captions must never make the bridge's memory grow without bound
MAX_BACKLOG_BYTES = 8 * 1024 * 1024
_LEN = struct.Struct(">I")

#: handler(kind, text, info): kind is "partial", "final" or "failed"
Handler = Callable[[str, str, dict[str, Any]], None]


def _pack(msg: tuple[Any, ...]) -> bytes:
    data = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
    return _LEN.pack(len(data)) + data


# -- the worker process -------------------------------------------------------------------


@dataclass
class _Utterance:
    rec: Recognizer
    down: Downsampler = field(default_factory=Downsampler)
    samples: int = 0
    partial_at: int = 0
    partial: str = ""
    busy: float = 0.0


def _read_msg(stream: BinaryIO) -> tuple[Any, ...] | None:
    head = stream.read(_LEN.size)
    if len(head) < _LEN.size:
        return None
    (n,) = _LEN.unpack(head)
    data = stream.read(n)
    if len(data) < n:
        return None
    return pickle.loads(data)


def worker_main(engine: str, model_path: str, language: str) -> None:
    """The worker process: read requests from stdin, write results to stdout."""
    inbox = sys.stdin.buffer
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed by the engine goes to stderr, not into the pipe

    def send(msg: tuple[Any, ...]) -> None:
        out.write(_pack(msg))
        out.flush()

    try:
        eng = load_engine(engine, model_path, language)
    except CaptionsError as exc:
        send(("error", str(exc)))
        return
    except BaseException as exc:  # noqa: BLE001 - anything at all must reach the bridge
        send(("error", f"captions worker failed to start: {exc!r}"))
        return
    send(("ready", eng.partials))
    free: list[Recognizer] = []
    active: dict[int, _Utterance] = {}
    partial_every = int(PARTIAL_EVERY_SECONDS * eng.sample_rate)
    while True:
        msg = _read_msg(inbox)
        if msg is None or msg[0] == "stop":
            break
        kind, utt_id = msg[0], msg[1]
        t0 = time.perf_counter()
        try:
            if kind == "audio":
                utt = active.get(utt_id)
                if utt is None:
                    rec = free.pop() if free else eng.recognizer()
                    rec.start()
                    utt = active[utt_id] = _Utterance(rec)
                pcm = utt.down(msg[2])
                utt.rec.accept(pcm)
                utt.samples += len(pcm)
                if eng.partials and utt.samples - utt.partial_at >= partial_every:
                    utt.partial_at = utt.samples
                    text = utt.rec.partial()
                    if text and text != utt.partial:
                        utt.partial = text
                        send(("partial", utt_id, text))
                utt.busy += time.perf_counter() - t0
            elif kind in ("end", "cancel"):
                utt = active.pop(utt_id, None)
                if utt is None:
                    if kind == "end":
                        send(("final", utt_id, "", 0.0, 0.0))
                    continue
                text = utt.rec.finish()
                free.append(utt.rec)
                utt.busy += time.perf_counter() - t0
                if kind == "end":
                    send(("final", utt_id, text, utt.busy, utt.samples / eng.sample_rate))
        except Exception as exc:  # one bad utterance must not end the worker
            active.pop(utt_id, None)
            send(("failed", utt_id, f"{type(exc).__name__}: {exc}"))


# -- the pool, on the event loop side ---------------------------------------------------


@dataclass
class _Route:
    worker: int
    handler: Handler


@dataclass
class _Worker:
    proc: asyncio.subprocess.Process
    reader: asyncio.Task[None] | None = None
    errors: asyncio.Task[None] | None = None
    ready: asyncio.Future[bool] | None = None
    load: int = 0
    #: the last lines the worker wrote to stderr (the engine's own error messages)
    stderr_tail: deque[str] = field(default_factory=lambda: deque(maxlen=5))


class CaptionPool:
    def __init__(self, engine: str = "pocketsphinx", model_path: str = "",
                 language: str = "en-US", workers: int = 1) -> None:
        self.engine, self.model_path, self.language = engine, model_path, language
        self.workers = max(1, workers)
        self.ready = False
        self.partials = True
        self._start_lock = asyncio.Lock()
        self._workers: list[_Worker] = []
        self._routes: dict[int, _Route] = {}
        self._next_id = 0
        self._closing = False
        #: counters, for tests and the bench
        self.chunks_sent = 0
        self.chunks_dropped = 0
        self.utterances = 0
        self.busy_seconds = 0.0
        self.audio_seconds = 0.0

    # lifecycle

    async def start(self) -> None:
        """Start the workers and load the model; raise CaptionsError if it cannot."""
        async with self._start_lock:
            if self.ready:
                return
            check_engine(self.engine, self.model_path, self.language)
            if self._workers:  # a previous run whose worker died
                await self.close()
            await self._spawn()

    async def _spawn(self) -> None:
        self._closing = False
        loop = asyncio.get_running_loop()
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])  # so the child finds `bridge`
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        for _ in range(self.workers):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", "from bridge.captions.worker import main; main()",
                self.engine,
                self.model_path, self.language, stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
            worker = _Worker(proc, ready=loop.create_future())
            worker.errors = asyncio.create_task(self._read_stderr(worker),
                                                name="captions-worker-stderr")
            worker.reader = asyncio.create_task(self._read(worker),
                                                name="captions-worker-reader")
            self._workers.append(worker)
        try:
            done = await asyncio.wait_for(
                asyncio.gather(*(w.ready for w in self._workers if w.ready)), START_TIMEOUT)
        except TimeoutError:
            await self.close()
            raise CaptionsError(f"captions.engine = {self.engine!r}: the recogniser did not "
                                f"load within {START_TIMEOUT:.0f} s") from None
        except CaptionsError:
            await self.close()
            raise
        self.partials = all(done)
        self.ready = True
        log.info("captions: %d %s worker(s) ready", self.workers, self.engine)

    async def _read(self, worker: _Worker) -> None:
        stdout = worker.proc.stdout
        assert stdout is not None
        try:
            while True:
                head = await stdout.readexactly(_LEN.size)
                (n,) = _LEN.unpack(head)
                self._dispatch(worker, pickle.loads(await stdout.readexactly(n)))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        if not self._closing:
            await worker.proc.wait()
            if worker.errors is not None:
                await asyncio.wait({worker.errors}, timeout=2.0)
            self._worker_died(worker)

    async def _read_stderr(self, worker: _Worker) -> None:
        stderr = worker.proc.stderr
        assert stderr is not None
        while line := await stderr.readline():
            text = line.decode(errors="replace").rstrip()
            if text:
                worker.stderr_tail.append(text)
                log.warning("captions worker: %s", text)

    async def close(self) -> None:
        self.ready = False
        self._closing = True
        workers, self._workers = self._workers, []
        for w in workers:
            self._write(w, ("stop",))
            if w.proc.stdin is not None:
                w.proc.stdin.close()
        for w in workers:
            try:
                await asyncio.wait_for(w.proc.wait(), 5.0)
            except TimeoutError:
                w.proc.kill()
                await w.proc.wait()
            for task in (w.reader, w.errors):
                if task is not None:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
        routes, self._routes = self._routes, {}
        for route in routes.values():
            route.handler("failed", "", {"reason": "captions stopped"})

    # utterances

    def begin(self, handler: Handler) -> int:
        """A new utterance; its results go to ``handler`` (on the event loop)."""
        if not self.ready:
            raise CaptionsError("captions are not running")
        self._next_id += 1
        worker = min(range(len(self._workers)), key=lambda i: self._workers[i].load)
        self._workers[worker].load += 1
        self._routes[self._next_id] = _Route(worker, handler)
        self.utterances += 1
        return self._next_id

    def _write(self, worker: _Worker, msg: tuple[Any, ...]) -> bool:
        stdin = worker.proc.stdin
        if stdin is None or stdin.is_closing():
            return False
        if msg[0] == "audio" and stdin.transport.get_write_buffer_size() > MAX_BACKLOG_BYTES:
            self.chunks_dropped += 1
            return False
        stdin.write(_pack(msg))
        return True

    def audio(self, utt: int, pcm48: np.ndarray) -> None:
        route = self._routes.get(utt)
        if route is not None and self._write(self._workers[route.worker],
                                             ("audio", utt, pcm48)):
            self.chunks_sent += 1

    def end(self, utt: int) -> None:
        route = self._routes.get(utt)
        if route is not None:
            self._write(self._workers[route.worker], ("end", utt))

    def cancel(self, utt: int) -> None:
        route = self._routes.pop(utt, None)
        if route is not None:
            worker = self._workers[route.worker]
            worker.load -= 1
            self._write(worker, ("cancel", utt))

    def _dispatch(self, worker: _Worker, msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        if kind in ("ready", "error"):
            if worker.ready is not None and not worker.ready.done():
                if kind == "ready":
                    worker.ready.set_result(bool(msg[1]))
                else:
                    worker.ready.set_exception(CaptionsError(msg[1]))
            return
        utt = msg[1]
        if kind == "partial":
            route = self._routes.get(utt)
            if route is not None:
                route.handler("partial", msg[2], {})
            return
        route = self._routes.pop(utt, None)
        if route is None:
            return
        worker.load -= 1
        if kind == "final":
            self.busy_seconds += msg[3]
            self.audio_seconds += msg[4]
            route.handler("final", msg[2], {"busy": msg[3], "audio": msg[4]})
        else:
            log.warning("captions: utterance %d failed: %s", utt, msg[2])
            route.handler("failed", "", {"reason": msg[2]})

    def _worker_died(self, worker: _Worker) -> None:
        said = "; ".join(worker.stderr_tail) or "see the bridge's log"
        if worker.ready is not None and not worker.ready.done():
            where = (f"model {self.model_path!r}" if self.model_path
                     else "its built-in model")
            worker.ready.set_exception(CaptionsError(
                f"captions.engine = {self.engine!r}: could not load {where}: the "
                f"recogniser exited (code {worker.proc.returncode}): {said}"))
            return
        log.error("captions: a recogniser process died (exit code %s: %s); captions "
                  "stopped (turn them on again to restart)", worker.proc.returncode, said)
        self.ready = False
        routes, self._routes = self._routes, {}
        for route in routes.values():
            route.handler("failed", "", {"reason": "captions worker died"})


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3:
        raise SystemExit("usage: python -m bridge.captions.worker ENGINE MODEL_PATH LANGUAGE")
    worker_main(*args)


if __name__ == "__main__":
    main()
