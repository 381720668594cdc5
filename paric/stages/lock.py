"""One pipeline invocation per output directory.

Why: two invocations on one ``run.output_dir`` corrupt each other's records (the second restores the
first one's live Tune experiment, a trial appears twice, ``best.json`` loses one). An exclusive
``flock`` on ``<output_dir>/.paric.lock`` refuses the second with a message naming the holder. The
kernel drops the lock when its process dies, so a lock file left by a killed run never blocks.
"""
from __future__ import annotations

import fcntl
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from paric.stages.cache import write_invocation_config, write_resolved_config

if TYPE_CHECKING:
    from paric.config import Config

LOCK_NAME = ".paric.lock"


class OutputDirInUse(RuntimeError):
    """Another live invocation holds the output directory."""


class OutputLock:
    """``with OutputLock(out):`` holds ``out``'s lock; :meth:`acquire` raises :class:`OutputDirInUse` at
    once when another live process holds it."""

    def __init__(self, out: Path) -> None:
        self.out, self.path, self.fd = out, out / LOCK_NAME, None

    def acquire(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode(errors="replace").strip() or "an unknown process"
            os.close(fd)
            raise OutputDirInUse(f"run.output_dir {self.out} is in use by another paric run ({holder}); wait for "
                                 "it to finish, or give this run another run.output_dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%H:%M:%S')}".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "OutputLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextmanager
def exclusive(cfg: "Config") -> Iterator[None]:
    """Hold ``run.output_dir`` for this invocation (a second one exits at once, status 3, saying who
    holds it); record the config in ``invocations/`` at the start and as ``config.resolved.yaml`` once
    the invocation has succeeded."""
    lock = OutputLock(cfg.output_path())
    try:
        lock.acquire()
    except OutputDirInUse as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(3) from None
    try:
        write_invocation_config(cfg)
        yield
        write_resolved_config(cfg)  # only after success: it describes the outputs beside it
    finally:
        lock.release()
