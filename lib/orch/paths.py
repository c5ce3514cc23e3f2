"""Where orch keeps its state, and how files in it are created.

Rules: every path is absolute and derived from the environment alone, never
from the working directory.  The state directory is created 0700 and files in
it 0600.  A symlink is never followed where orch creates or opens its own
files (O_NOFOLLOW), so a planted link cannot redirect a write.
"""

import os

from .errors import CANTCREAT, DATAERR, IOERR, NOPERM, OrchError

DIR_MODE = 0o700
FILE_MODE = 0o600


def state_dir(create=True):
    """The state directory: $ORCH_HOME, else $XDG_STATE_HOME/orch, else ~/.local/state/orch."""
    home = os.environ.get("ORCH_HOME")
    if home and not os.path.isabs(home):
        # Refused rather than made absolute: every process (a cron job, a daemon, a
        # hook) would find its own state directory under its own working directory.
        raise OrchError(f"ORCH_HOME must be an absolute path, not {home!r}", DATAERR)
    if not home:
        base = os.environ.get("XDG_STATE_HOME")
        if not base or not os.path.isabs(base):
            user_home = os.environ.get("HOME") or os.path.expanduser("~")
            base = os.path.join(user_home, ".local", "state")
        home = os.path.join(base, "orch")
    home = os.path.abspath(home)
    if create:
        make_dir(home)
    elif not os.path.isdir(home):
        return home
    if home not in _ours:
        check_private(home)
        _ours.add(home)
    return home


_ours = set()  # directories this process has found to be private to it


def check_private(path, st=None):
    """Refuse PATH (exit 77) unless it is ours: owned by this user and not writable
    by group or others.  Anyone else who could write there could swap in a lock
    file and hold it, or move the database aside; its parents do not matter
    (a state directory under /tmp is fine)."""
    st = st if st is not None else os.stat(path)
    if st.st_uid != os.geteuid():
        raise OrchError(f"{path} belongs to another user (uid {st.st_uid}): orch keeps its "
                        "state only where nobody else can change it; set ORCH_HOME to a "
                        "directory of your own", NOPERM)
    if st.st_mode & 0o022:
        raise OrchError(f"{path} is writable by group or others: orch keeps its state only "
                        f"where nobody else can change it; fix it with: chmod go-w {path}",
                        NOPERM)


def make_dir(path):
    """Create PATH (and parents) 0700 if missing; fail clearly if it is not a usable directory."""
    try:
        os.makedirs(path, mode=DIR_MODE, exist_ok=True)
    except FileExistsError:
        raise OrchError(f"{path} exists and is not a directory", CANTCREAT) from None
    except OSError as e:
        raise OrchError(f"cannot create {path}: {e.strerror}", CANTCREAT) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise OrchError(f"{path} is not writable", CANTCREAT)
    return path


def sub(*parts, create_dir=False):
    """A path inside the state directory; with create_dir, make it as a directory."""
    path = os.path.join(state_dir(), *parts)
    if create_dir:
        make_dir(path)
        if path not in _ours:
            check_private(path)
            _ours.add(path)
    return path


def which(command):
    """The file execvp(3) would run for COMMAND (or None): a plain PATH scan,
    cheaper to import than shutil.which."""
    if "/" in command:
        return command
    for directory in os.get_exec_path():
        path = os.path.join(directory, command)
        if os.access(path, os.X_OK) and not os.path.isdir(path):
            return path
    return None


def open_private(path, flags=os.O_RDWR | os.O_CREAT):
    """Open (creating 0600) a file of ours, refusing to follow a symlink."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    except OSError as e:
        if e.errno == 40:  # ELOOP: the last component is a symlink
            raise OrchError(f"{path} is a symbolic link; refusing to follow it",
                            CANTCREAT) from None
        raise OrchError(f"cannot open {path}: {e.strerror}", CANTCREAT) from None
    try:
        check_private(path, os.fstat(fd))
    except OrchError:
        os.close(fd)
        raise
    return fd


def write_atomic(path, data, mode=FILE_MODE, durable=True, status=IOERR):
    """Replace PATH with DATA (bytes or str): a reader sees the old or the new file, never half.

    The temporary file beside it is created O_NOFOLLOW, so a planted link is
    never written through.  DURABLE fsyncs before the rename (records that only
    live as long as a process need not); STATUS is the exit status on failure.
    """
    if isinstance(data, str):
        data = data.encode()
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                     mode)
        try:
            os.fchmod(fd, mode)  # whatever the umask
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise OrchError(f"cannot write {path}: {e.strerror}", status) from None


def poke_fifo(path):
    """Write one byte to the FIFO at PATH if a process reads it; never block, never
    follow a symlink, never write to anything but a FIFO."""
    import stat
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return  # ENXIO: nobody is reading; ENOENT: nobody ever did
    try:
        if stat.S_ISFIFO(os.fstat(fd).st_mode):
            os.write(fd, b"\n")
    except OSError:
        pass  # EAGAIN: the pipe is full, which already means "wake up"
    finally:
        os.close(fd)
