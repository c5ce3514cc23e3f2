"""Named kernel locks: flock(2) on files under <state>/locks/.

Rules (as in nq): a lock is held exactly while some open file description of
its file holds flock(LOCK_EX); the kernel drops it when the holder exits,
however it exits, so a lock can never go stale.  Lock files are opened
without O_TRUNC and never deleted, so a waiter never truncates the holder's
file and two processes can never lock two different files of one name.  They
are opened O_NOFOLLOW|O_CLOEXEC: a planted symlink is refused and a child
process never inherits a lock.  SQLite uses POSIX locks on orch.db, which is
why nothing here ever touches the database file.
"""

import contextlib
import fcntl
import os
import re

from . import paths
from .errors import DATAERR, TEMPFAIL, OrchError

MAX_NAME = 128
_NAME = re.compile(r"[A-Za-z0-9_@%+=,][A-Za-z0-9_.@%+=,-]*")


def check_name(name):
    """A lock name is one safe path component: never '/', '..', NUL, or too long."""
    if not name or len(name) > MAX_NAME or ".." in name or not _NAME.fullmatch(name):
        raise OrchError(f"bad lock name: {name!r} (letters, digits and _.@%+=,- only, "
                        f"at most {MAX_NAME}, no '..', not starting with '.' or '-')", DATAERR)
    return name


def lock_path(name):
    return os.path.join(paths.sub("locks", create_dir=True), check_name(name))


def open_lock(name):
    """Open (creating 0600, never truncating) the lock file of NAME; return the fd."""
    return paths.open_private(lock_path(name), os.O_RDWR | os.O_CREAT)


def acquire(fd, blocking=True):
    """flock FD exclusively; False if BLOCKING is off and another process holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        return True
    except BlockingIOError:
        return False


@contextlib.contextmanager
def held(name, blocking=True):
    """Hold lock NAME for the block; raise OrchError(75) if not blocking and it is taken."""
    fd = open_lock(name)
    try:
        if not acquire(fd, blocking):
            raise OrchError(f"lock {name} is held by another process", TEMPFAIL)
        yield fd
    finally:
        os.close(fd)  # closing the last descriptor releases the flock


def process_start(pid):
    """The start time of process PID in clock ticks since boot, or None if it does not exist.

    A pid together with its start time names one process for good: pids are reused.
    """
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and ')': split after the last ')'.
    fields = stat[stat.rfind(b")") + 2:].split()
    if fields[0] in (b"Z", b"X"):  # exited, not yet reaped: it holds nothing any more
        return None
    return int(fields[19])


def alive(pid, start):
    """True if process PID is running and is the one that started at START."""
    return pid is not None and start is not None and process_start(pid) == int(start)


# --- holder records -------------------------------------------------------------
# Who holds a lock is written, after the lock is taken, to <state>/holders/NAME
# (a separate directory: a lock name can never collide with a record).  The
# record is replaced atomically, so a reader sees a whole record or none, and
# it names the holder by pid *and* process start time, so a record left by a
# dead holder (kill -9) is recognised as stale and never shown as held.

def holder_path(name):
    return os.path.join(paths.sub("holders", create_dir=True), check_name(name))


def write_holder(name, **fields):
    import json
    import socket
    import time
    pid = os.getpid()
    record = {"name": name, "pid": pid, "start": process_start(pid),
              "host": socket.gethostname(), "since": time.time(), **fields}
    paths.write_atomic(holder_path(name), json.dumps(record) + "\n")


def read_holder(name):
    """The live holder record of NAME, or None when free or its writer is dead."""
    import json
    try:
        fd = os.open(holder_path(name), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        with os.fdopen(fd, "rb") as f:
            record = json.loads(f.read() or b"null")
    except ValueError:
        return None
    if not isinstance(record, dict) or not alive(record.get("pid"), record.get("start")):
        return None
    return record
