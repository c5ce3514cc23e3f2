"""Named kernel locks: flock(2) on files under <state>/locks/.

Rules (as in nq): a lock is held exactly while some open file description of
its file holds flock(LOCK_EX); the kernel drops it when the holder exits,
however it exits, so a lock can never go stale.  Lock files are opened
without O_TRUNC and never deleted, so a waiter never truncates the holder's
file and two processes can never lock two different files of one name.  They
are opened O_NOFOLLOW|O_CLOEXEC: a planted symlink is refused and a child
process never inherits a lock.  SQLite uses POSIX locks on orch.db, which is
why nothing here ever touches the database file.

A bounded wait blocks in flock(2) itself and is cut short by an interval timer
(SIGALRM), as flock(1) does, so a waiter wakes the moment the lock is free.
Whether a lock is held is asked of the kernel (/proc/locks), never by taking
it, so looking can never make a contender fail.
"""

import fcntl
import os
import re
import signal

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


class _Timeout(Exception):
    pass


_armed = False


def _on_alarm(signum, frame):
    # Raising is what makes flock() give up: a handler that returns would have
    # the interrupted call restarted (PEP 475).  Only while armed, so a late
    # alarm can never escape as an exception from code after the wait.
    if _armed:
        raise _Timeout


def acquire_within(fd, seconds):
    """flock FD exclusively, waiting at most SECONDS; False if it stayed held."""
    global _armed
    if seconds <= 0:
        return acquire(fd, blocking=False)
    old = signal.signal(signal.SIGALRM, _on_alarm)
    try:
        _armed = True
        signal.setitimer(signal.ITIMER_REAL, max(seconds, 1e-6))
        fcntl.flock(fd, fcntl.LOCK_EX)
        _armed = False
        return True
    except _Timeout:
        # The alarm may have struck just after flock() succeeded: we then
        # report a timeout, and the caller's close releases the lock.
        return False
    finally:
        _armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


class held:
    """with held(NAME): hold lock NAME for the block; OrchError(75) if not BLOCKING and taken.

    (A class, not contextlib.contextmanager: importing contextlib is a
    measurable part of `orch-lock run`'s start-up.)
    """

    def __init__(self, name, blocking=True):
        self.name, self.blocking = name, blocking

    def __enter__(self):
        self.fd = open_lock(self.name)
        if not acquire(self.fd, self.blocking):
            os.close(self.fd)
            raise OrchError(f"lock {self.name} is held by another process", TEMPFAIL)
        return self.fd

    def __exit__(self, *exc):
        os.close(self.fd)  # closing the last descriptor releases the flock
        return False


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


def kernel_holders():
    """{(major, minor, inode): pid} of every granted flock(2) lock, or None if unknown.

    /proc/locks lists granted locks as "N: FLOCK ADVISORY WRITE PID MAJ:MIN:INODE ..."
    (major and minor in hex) and waiters with "->" before the type; only the
    granted ones count.
    """
    try:
        with open("/proc/locks", "rb") as f:
            text = f.read()
    except OSError:
        return None
    found = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 6 or fields[1] != b"FLOCK":
            continue
        try:
            major, minor, inode = fields[5].split(b":")
            found[(int(major, 16), int(minor, 16), int(inode))] = int(fields[4])
        except ValueError:
            continue
    return found


def kernel_holder(path, table):
    """The pid /proc/locks names as holding the flock on PATH (0 if unknown), or None if free."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    return table.get((os.major(st.st_dev), os.minor(st.st_dev), st.st_ino))


# --- holder records -------------------------------------------------------------
# Who holds a lock is written, after the lock is taken, to <state>/holders/NAME
# (a separate directory: a lock name can never collide with a record).  The
# record is replaced atomically, so a reader sees a whole record or none, and
# it names the holder by pid *and* process start time, so a record left by a
# dead holder (kill -9) is recognised as stale and never shown as held.
# A record describes a live process only, so it is renamed into place without
# fsync: after a crash there is no holder left to describe.

def holder_path(name):
    return os.path.join(paths.sub("holders", create_dir=True), check_name(name))


def holder_record(name, **fields):
    """The record write_holder would write for this process (without its time)."""
    pid = os.getpid()
    return {"name": name, "pid": pid, "start": process_start(pid),
            "host": os.uname().nodename, **fields}


def write_holder(name, record=None, **fields):
    """Record that this process holds NAME (call it only while holding NAME)."""
    import time
    record = dict(record or holder_record(name), **fields)
    record.setdefault("since", time.time())
    # Not fsynced: a record only describes a live process.
    paths.write_atomic(holder_path(name), _json_object(record) + "\n", durable=False)


def _json_object(record):
    # json.dumps of a flat record, without importing json: a waiter writes
    # this right after the hand-over, and `run` is measured by its start-up.
    def value(v):
        if v is None or isinstance(v, bool):
            return {None: "null", True: "true", False: "false"}[v]
        if isinstance(v, (int, float)):
            return repr(v)
        return _json_string(str(v))
    return "{" + ", ".join(f"{value(k)}: {value(v)}" for k, v in record.items()) + "}"


def _json_string(text):
    # Everything outside printable ASCII is escaped, lone surrogates (from
    # undecodable argv bytes) included, so the record is always valid JSON.
    out = []
    for c in text:
        if " " <= c <= "~" and c not in '"\\':
            out.append(c)
        elif ord(c) < 0x10000:
            out.append(f"\\u{ord(c):04x}")
        else:
            n = ord(c) - 0x10000
            out.append(f"\\u{0xD800 + (n >> 10):04x}\\u{0xDC00 + (n & 0x3FF):04x}")
    return '"' + "".join(out) + '"'


def clear_holder(name):
    """Remove the record of NAME.  Call it only while still holding NAME: the
    record is then this process's own, and the next holder's cannot exist yet."""
    try:
        os.unlink(holder_path(name))
    except OSError:
        pass


def read_holder(name):
    """The live holder record of NAME, or None when free or its writer is dead."""
    import json
    try:
        fd = os.open(holder_path(name), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        paths.check_private(holder_path(name), os.fstat(fd))
    except OrchError:
        os.close(fd)
        raise
    try:
        with os.fdopen(fd, "rb") as f:
            record = json.loads(f.read() or b"null")
    except ValueError:
        return None
    if not isinstance(record, dict) or not alive(record.get("pid"), record.get("start")):
        return None
    return record


def who(name=None):
    """The holders of NAME (or of every lock), as records sorted by name.

    A lock counts as held when the kernel lists it or when its record names a
    live process (records are written only while holding, and removed before
    letting go; the kernel covers the moment before the record is written and
    locks taken by other flock(2) users of the file, shown with the pid
    /proc/locks gives and nothing else).  The lock is never taken.
    """
    table = kernel_holders()
    if name is not None:
        names = [check_name(name)]
    else:
        names = set()
        for sub in ("locks", "holders"):
            try:
                names.update(n for n in os.listdir(paths.sub(sub)) if _NAME.fullmatch(n)
                             and ".." not in n and len(n) <= MAX_NAME)
            except OSError:
                pass
        names = sorted(names)
    found = []
    for each in names:
        record = read_holder(each)
        if record is None and table is not None:
            pid = kernel_holder(os.path.join(paths.sub("locks"), each), table)
            if pid is not None:
                record = {"name": each, "pid": pid or None}
        if record is not None:
            found.append(record)
    return found


def recorded():
    """The live holder records of every lock, sorted by name, from the records alone.

    Unlike who(), the kernel is not asked: reading /proc/locks takes a kernel
    lock that may first wait for an RCU grace period (10-20 ms measured), too
    slow for a status line.  A holder that writes no record is not seen.
    """
    try:
        names = sorted(n for n in os.listdir(paths.sub("holders")) if _NAME.fullmatch(n)
                       and ".." not in n and len(n) <= MAX_NAME)
    except OSError:
        return []
    return [r for r in map(read_holder, names) if r is not None]


# --- file systems -------------------------------------------------------------

NETWORK_FS = {"nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "afs", "ceph", "9p",
              "glusterfs", "lustre", "gpfs", "beegfs", "fuse.sshfs", "fuse.glusterfs",
              "fuse.rclone", "fuse.s3fs", "fuse.gcsfuse"}


def fs_type(path):
    """The file system type of the mount holding PATH, from /proc/self/mountinfo (or None)."""
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            text = f.read().decode(errors="replace")
    except OSError:
        return None
    path = os.path.realpath(path)
    best, kind = -1, None
    for line in text.splitlines():
        # ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS
        fields = line.split(" ")
        try:
            point = _unescape(fields[4])
            fstype = fields[fields.index("-", 6) + 1]
        except (IndexError, ValueError):
            continue
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= best:  # the longest, and the later of equals, wins
            best, kind = len(point), fstype
    return kind


def _unescape(field):
    # mountinfo writes space, tab, newline and backslash as octal escapes.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def on_network_fs(path):
    """The type of network file system PATH is on (flock is unreliable there), or None."""
    kind = fs_type(path)
    if kind and (kind in NETWORK_FS or kind.startswith("nfs")):
        return kind
    return None


# --- running a command under a lock -------------------------------------------
# The command is a child, not an exec: the lock fd is close-on-exec, so the
# command (and any daemon it starts) never holds the lock, which ends with
# orch-lock.  The child gets SIGKILL when orch-lock dies (PR_SET_PDEATHSIG),
# so a command never runs on without its lock; SIGTERM, SIGHUP and a SIGINT
# sent with kill(2) are passed on to it (a SIGINT from the terminal already
# reached it: it is in our process group).  Signals are taken synchronously
# (sigwaitinfo), blocked before the child may exec, so none is lost.
#
# The child is forked before the lock is asked for, and waits on a pipe: a
# waiter pays for fork and set-up while the lock is still held elsewhere, and
# the hand-over costs one write(2) and the command's execve(2).  If orch-lock
# gives up (or dies), the pipe closes and the child leaves without running.

PR_SET_PDEATHSIG = 1
SI_KERNEL = 0x80
_FORWARD = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_pdeathsig = None


def _find_prctl():
    """A function setting PR_SET_PDEATHSIG to SIGKILL, or False where there is no prctl(2).

    prctl is reached through _ctypes, ctypes' C core, because importing the
    ctypes package costs more than everything else `run` does after start-up;
    the package is the fallback should that core ever change.
    """
    args = (PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    try:
        import _ctypes
        address = _ctypes.dlsym(_ctypes.dlopen(None, 2), "prctl")  # RTLD_NOW
        call = _ctypes.call_function
        return lambda: call(address, args)
    except (ImportError, AttributeError, OSError, TypeError):
        pass
    try:
        import ctypes
        prctl = ctypes.CDLL(None, use_errno=True).prctl
        return lambda: prctl(*args)
    except (ImportError, OSError, AttributeError):  # not Linux: no parent-death signal
        return False


class Command:
    """ARGV in a child forked now, which execs it on go() and leaves on cancel()."""

    def __init__(self, argv):
        global _pdeathsig
        import shlex
        if _pdeathsig is None:
            _pdeathsig = _find_prctl()
        self.argv, self.text = argv, shlex.join(argv)
        parent = os.getpid()
        r, self._go = os.pipe()  # both ends close-on-exec
        self.pid = os.fork()
        if self.pid == 0:  # pragma: no cover - the child
            os.close(self._go)
            _child(argv, r, parent)
        os.close(r)

    def run(self, name, note=None):
        """Exec the command (the caller holds lock NAME); return its exit status, 128+N
        for signal N.  The holder record exists while it runs, inside the lock."""
        waitset = {signal.SIGCHLD, *_FORWARD}
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, waitset)
        try:
            try:
                os.write(self._go, b"x")
            except BrokenPipeError:  # the child was killed while we waited
                pass
            try:
                write_holder(name, holder_record(name, command=self.text, note=note))
            except OrchError as e:  # the lock is held all the same; only `who` cannot say
                os.write(2, f"orch-lock: warning: {e}\n".encode())
            status = self._wait(waitset)
            clear_holder(name)
            return status
        finally:
            self.cancel()
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)

    def _wait(self, waitset):
        while True:
            # Checked before each wait: SIGCHLD is blocked from here on, so an
            # exit after this check is pending for sigwaitinfo.
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                self.pid = None
                code = os.waitstatus_to_exitcode(status)
                return 128 - code if code < 0 else code
            info = signal.sigwaitinfo(waitset)
            if info.si_signo != signal.SIGCHLD and not (
                    info.si_signo == signal.SIGINT and info.si_code == SI_KERNEL):
                try:
                    os.kill(self.pid, info.si_signo)
                except ProcessLookupError:  # it has just ended: waitpid will say so
                    pass

    def cancel(self):
        """Let the child go without running the command (if it has not), and reap it."""
        if self._go is not None:
            os.close(self._go)
            self._go = None
        if self.pid is not None:
            try:
                os.waitpid(self.pid, 0)
            except ChildProcessError:
                pass
            self.pid = None


def _child(argv, go, parent):
    status = 127
    try:
        if _pdeathsig:
            _pdeathsig()
        if os.getppid() != parent:  # orch-lock died before the line above took effect
            os._exit(128 + signal.SIGKILL)
        # Python ignores SIGPIPE and SIGXFSZ and handles SIGINT; an exec'd
        # program starts with the defaults (and the signal mask orch-lock had).
        for sig in (signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(sig, signal.SIG_DFL)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
        path = paths.which(argv[0])
        if os.read(go, 1) != b"x":  # orch-lock did not get the lock
            os._exit(0)
        if path:
            os.execv(path, argv)
        os.execvp(argv[0], argv)  # for its error
    except OSError as e:
        status = 127 if e.errno == 2 else 126  # as sh(1): not found / not executable
        os.write(2, f"orch-lock: error: cannot run {argv[0]}: {e.strerror}\n".encode())
    finally:
        os._exit(status)


