"""What every orch daemon shares: one instance per state directory, detaching,
sleeping until woken, and stopping cleanly.

Rules: the single instance is a kernel lock (locks.held, non-blocking) held
for the daemon's whole life, so a crashed daemon never blocks the next one;
its holder record tells others the pid.  --detach forks a child that takes
the lock itself and reports back through a pipe, so two concurrent --detach
calls start one daemon and both print its pid.  SIGTERM/SIGINT set `stopping`
and wake the sleeper through a self-pipe; the loop finishes the work in
flight and returns.
"""

import os
import select
import signal
import stat
import sys
import threading
import time

from . import locks, paths
from .errors import TEMPFAIL, OrchError


class Daemon:
    def __init__(self, name, wake_fifo=None):
        self.name = name
        self.wake_fifo = wake_fifo
        self.stopping = threading.Event()
        self.stopped_by = None  # the signal that stopped the loop, if one did
        self._sig_r = self._fifo = self._fifo_w = None

    def running_pid(self):
        record = locks.read_holder(self.name)
        return record["pid"] if record else None

    def serve(self, loop):
        """Run LOOP(self) in this process as the one daemon; raise 75 if one runs."""
        fd = locks.open_lock(self.name)
        try:
            if not locks.acquire(fd, blocking=False):
                pid = self.running_pid()
                raise OrchError(f"a daemon is already running for this state directory"
                                f"{f' (pid {pid})' if pid else ''}", TEMPFAIL)
            self._serve_locked(loop)
        finally:
            os.close(fd)

    def _serve_locked(self, loop, ready=None):
        # Signals are handled before the record says we run: a SIGTERM sent to
        # the pid it names always stops the loop cleanly.
        self._setup_wakeups()
        locks.write_holder(self.name, command=" ".join(sys.argv), note="daemon")
        if ready is not None:
            os.write(ready, f"{os.getpid()}\n".encode())
            os.close(ready)
        loop(self)

    def detach(self, loop, log_name):
        """Start the daemon in the background unless one runs; return its pid."""
        pid = self.running_pid()
        if pid:
            return pid
        r, w = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover - runs in the child
            os.close(r)
            status = 0
            try:
                os.setsid()
                # Never keep a worktree (or a mount) busy; the state directory is
                # resolved first, so the child's stays the one meant.
                os.environ["ORCH_HOME"] = paths.state_dir()
                os.chdir("/")
                _redirect(paths.sub(log_name))
                fd = locks.open_lock(self.name)
                if locks.acquire(fd, blocking=False):
                    self._serve_locked(loop, ready=w)
                else:
                    os.write(w, b"busy\n")
            except BaseException as e:  # noqa: BLE001 - the child must never return
                print(f"daemon: {e}", file=sys.stderr)
                status = 1
            finally:
                os._exit(status)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            answer = f.readline().strip()
        if answer.isdigit():
            return int(answer)
        os.waitpid(child, 0)
        # Another daemon won the race: it writes its record just after taking the lock.
        deadline = time.monotonic() + 5
        while answer == b"busy" and time.monotonic() < deadline:
            pid = self.running_pid()
            if pid:
                return pid
            time.sleep(0.01)
        raise OrchError(f"the daemon did not start; see {paths.sub(log_name)}", TEMPFAIL)

    def _setup_wakeups(self):
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._sig_r = r
        signal.set_wakeup_fd(w)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        if self.wake_fifo:
            self._fifo, self._fifo_w = _open_fifo(self.wake_fifo)

    def _on_signal(self, signum, frame):
        self.stopped_by = signum
        self.stopping.set()

    def poke(self):
        """Wake the loop from another thread of this process (a worker that ended)."""
        if self._fifo_w is not None:
            try:
                os.write(self._fifo_w, b"\n")
            except OSError:
                pass  # full: it is awake already

    def sleep(self, timeout):
        """Sleep up to TIMEOUT seconds, returning early when woken or told to stop."""
        if self.stopping.is_set():
            return
        fds = [fd for fd in (self._sig_r, self._fifo) if fd is not None]
        ready, _, _ = select.select(fds, [], [], max(timeout, 0))
        for fd in ready:
            try:
                while os.read(fd, 4096):
                    pass
            except BlockingIOError:
                pass


def _open_fifo(path):
    try:
        os.mkfifo(path, 0o600)
    except FileExistsError:
        pass
    if not stat.S_ISFIFO(os.lstat(path).st_mode):
        raise OrchError(f"{path} exists and is not a FIFO", TEMPFAIL)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    # Hold a write end too: with no writer left, select() would report EOF forever.
    return fd, os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)


def _redirect(log_path):
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    log = paths.open_private(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(devnull)
    os.close(log)
