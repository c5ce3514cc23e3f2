"""The tmux adapter: which server, exact targets, literal typing, screen capture.

Rules:
- A server is named by its socket path, fixed when a task is added
  (ORCH_TMUX_SOCKET, else $TMUX, else the default socket), and always reached
  with `tmux -S PATH`, so a daemon started anywhere types into the right server.
- Targets are resolved exactly: the session with `=NAME`, the window with
  `=NAME` (which still accepts an index), through list-panes, which fails on
  a missing target (display-message silently falls back to another pane).
  A pane is then addressed by its id (%N) only.
- A dead pane (remain-on-exit kept it after its program exited) is missing:
  nothing is ever pasted into one (tmux 3.3 crashes on that).
- Text is never a send-keys argument and never passes a shell: it is loaded
  into a uniquely named buffer from stdin and pasted with -p (bracketed where
  the application asked for it) and -d (deleted after).  Enter is a separate
  key, sent by the caller after its delay.
"""

import itertools
import os
import re
import signal
import time

from . import paths
from .errors import DATAERR, IOERR, UNAVAILABLE, OrchError

# session[:window[.pane]] or a pane id %N.  tmux forbids ':' and '.' in session names.
_TARGET = re.compile(r"(?P<session>[^:.]+)(?::(?P<window>[^:.]*)(?:\.(?P<pane>\d+))?)?")
_PANE_ID = re.compile(r"%\d+")
_buffer_numbers = itertools.count(1)  # next() is atomic under the GIL
LOOKUP_TIMEOUT_S = 5.0  # how long `add` waits for tmux to say whether its target exists


class Missing(Exception):
    """The target (or its server) is not there now; the message says which."""


def tmux_bin():
    path = paths.which("tmux")
    if not path:
        raise OrchError("tmux is not installed (not found on PATH)", UNAVAILABLE)
    return path


def _socket_dir():
    return os.path.join(os.environ.get("TMUX_TMPDIR") or "/tmp", f"tmux-{os.getuid()}")


def server_from_env():
    """The socket path of the server this process means: ORCH_TMUX_SOCKET, $TMUX, else default."""
    path = _server_from_env()
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise OrchError(f"tmux socket path {os.fsencode(path)!r} is not valid UTF-8",
                        DATAERR) from None
    return path


def _server_from_env():
    name = os.environ.get("ORCH_TMUX_SOCKET")
    if name:
        if "/" in name:
            return os.path.abspath(name)
        return os.path.join(_socket_dir(), name)
    inside = os.environ.get("TMUX")
    if inside:
        return inside.split(",")[0]
    return os.path.join(_socket_dir(), "default")


def check_target(text):
    """Validate a target; return it unchanged or raise OrchError (exit 65)."""
    if _PANE_ID.fullmatch(text):
        return text
    m = _TARGET.fullmatch(text)
    bad = (not m or any(ord(c) < 32 or c == "\x7f" for c in text)
           or text != text.strip() or text.startswith("-"))
    if bad or (m.group("window") is not None and m.group("window") == "" and m.group("pane")):
        raise OrchError(f"bad target: {text!r} (want session, session:window or "
                        "session:window.pane, or a pane id %N)", DATAERR)
    return text


def run(server, *args, input=None):
    """Run one tmux command line on SERVER; return stdout (bytes).  Raises Missing on failure."""
    import subprocess  # not at module level: `add` validates targets without it
    try:
        proc = subprocess.run([tmux_bin(), "-S", server, *args], input=input,
                              capture_output=True, timeout=30)
    except subprocess.TimeoutExpired:
        raise Missing("tmux did not answer within 30 s") from None
    if proc.returncode != 0:
        reason = proc.stderr.decode(errors="replace").strip().splitlines()
        reason = reason[0] if reason else f"tmux exited {proc.returncode}"
        if reason.startswith(("no server running", "error connecting")):
            reason = f"tmux server not running ({server})"
        raise Missing(reason)
    return proc.stdout


class Pane:
    """A resolved pane: its id, its first process, what it is running (tmux's
    name for it), and its screen if captured with it."""

    def __init__(self, pane_id, command, in_mode, screen=None, pid=None, cursor=None):
        self.id, self.command, self.in_mode, self.screen = pane_id, command, in_mode, screen
        self.pid, self.cursor = pid, cursor


def _pid(text):
    return int(text) if text.isdigit() else None


_FORMAT = ("#{pane_index}\t#{pane_id}\t#{pane_active}\t#{pane_current_command}\t#{pane_in_mode}"
           "\t#{pane_pid}\t#{cursor_y}\t#{pane_dead}")


def resolve(server, target):
    """TARGET -> Pane, exactly (never tmux's prefix matching).  Raises Missing."""
    if _PANE_ID.fullmatch(target):
        window = target

        def wanted(index, pane_id, active):
            return pane_id == target
    else:
        m = _TARGET.fullmatch(target)
        window = f"={m.group('session')}:"
        if m.group("window"):
            window += f"={m.group('window')}"
        pane = m.group("pane")

        def wanted(index, pane_id, active):
            return index == pane if pane is not None else active == "1"
    listing = run(server, "list-panes", "-t", window, "-F", _FORMAT).decode()
    for line in listing.splitlines():
        index, pane_id, active, command, in_mode, pid, _, dead = line.split("\t")
        if wanted(index, pane_id, active):
            if dead == "1":
                raise Missing(dead_pane(pane_id))
            return Pane(pane_id, command, in_mode == "1", pid=_pid(pid))
    raise Missing(f"can't find pane: {target}")


_ALL_FORMAT = ("#{session_name}\t#{window_index}\t#{window_name}\t#{window_active}\t"
               "#{pane_index}\t#{pane_id}\t#{pane_active}\t#{pane_current_command}\t"
               "#{pane_in_mode}\t#{pane_pid}\t#{pane_dead}")


def resolve_all(server, targets):
    """Resolve many targets with one tmux call: {target: Pane or Missing}.

    The same exact rules as resolve(): session by name; window by index, else
    by its whole name (more than one window of that name is an error, as in
    tmux); the given pane index, else the active pane.
    """
    try:
        listing = run(server, "list-panes", "-a", "-F", _ALL_FORMAT)
    except Missing as e:
        return {t: e for t in targets}
    return _resolved(listing, targets)


class Lookup:
    """resolve_all() started now and read later, so that a command can do its
    own work while tmux answers (`orch-sched add` warns of a missing target
    without paying for the wait, or for importing subprocess)."""

    def __init__(self, server):
        self.pid, self.server = None, server
        try:
            argv = [tmux_bin(), "-S", server, "list-panes", "-a", "-F", _ALL_FORMAT]
        except OrchError as e:
            self.failed = Missing(str(e))
            return
        self.out, out_w = os.pipe()
        self.err, err_w = os.pipe()
        try:
            self.pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=[
                (os.POSIX_SPAWN_DUP2, out_w, 1), (os.POSIX_SPAWN_DUP2, err_w, 2),
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)])
            self.failed = None
        except OSError as e:
            self.failed = Missing(f"tmux could not be started: {e.strerror}")
        finally:
            os.close(out_w)
            os.close(err_w)

    def result(self, targets, timeout=LOOKUP_TIMEOUT_S):
        """{target: Pane or Missing}, as resolve_all() gives it; a tmux that has
        not answered within TIMEOUT seconds is ended and counts as Missing."""
        if self.pid is None:
            return {t: self.failed for t in targets}
        got = _read_all({self.out: [], self.err: []}, time.monotonic() + timeout)
        if got is None:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
            return {t: Missing(f"tmux did not answer within {timeout:g} s") for t in targets}
        out, err = got[self.out], got[self.err]
        _, status = os.waitpid(self.pid, 0)
        if status != 0:
            reason = err.decode(errors="replace").strip().splitlines()
            reason = reason[0] if reason else "tmux failed"
            if reason.startswith(("no server running", "error connecting")):
                reason = f"tmux server not running ({self.server})"
            return {t: Missing(reason) for t in targets}
        return _resolved(out, targets)


def _read_all(chunks, deadline):
    """Read every fd of CHUNKS ({fd: []}) to its end -> {fd: bytes}, or None
    at DEADLINE (time.monotonic()).  The fds are closed either way."""
    import select
    try:
        left = list(chunks)
        while left:
            wait = deadline - time.monotonic()
            ready = select.select(left, [], [], max(wait, 0))[0] if wait > 0 else []
            if not ready:
                return None
            for fd in ready:
                data = os.read(fd, 65536)
                if data:
                    chunks[fd].append(data)
                else:
                    left.remove(fd)
        return {fd: b"".join(parts) for fd, parts in chunks.items()}
    finally:
        for fd in chunks:
            os.close(fd)


def _resolved(listing, targets):
    listing = listing.decode(errors="replace")
    panes = [line.split("\t") for line in listing.splitlines()]
    panes = [p for p in panes if len(p) == 11]
    result = {}
    for target in targets:
        result[target] = _match(target, panes)
    return result


def _match(target, panes):
    if _PANE_ID.fullmatch(target):
        rows = [p for p in panes if p[5] == target]
        return _pane(rows[0]) if rows else Missing(f"can't find pane: {target}")
    m = _TARGET.fullmatch(target)
    session, window, pane = m.group("session"), m.group("window"), m.group("pane")
    rows = [p for p in panes if p[0] == session]
    if not rows:
        return Missing(f"can't find session: {session}")
    if window:
        by_index = [p for p in rows if p[1] == window] if window.isdigit() else []
        by_name = [p for p in rows if p[2] == window]
        if by_index:
            rows = by_index
        elif len({p[1] for p in by_name}) > 1:
            return Missing(f"more than one window named {window}")
        elif by_name:
            rows = by_name
        else:
            return Missing(f"can't find window: {window}")
    else:
        rows = [p for p in rows if p[3] == "1"]
    rows = [p for p in rows if (p[4] == pane if pane is not None else p[6] == "1")]
    if not rows:
        return Missing(f"can't find pane: {pane}")
    return _pane(rows[0])


def _pane(row):
    if row[10] == "1":
        return Missing(dead_pane(row[5]))
    return Pane(row[5], row[7], row[8] == "1", pid=_pid(row[9]))


def dead_pane(pane_id):
    return f"pane {pane_id} is dead (its program has exited)"


def inspect(server, pane_id):
    """Pane PANE_ID as it is now, with its screen, in one tmux call.  Raises Missing."""
    token = os.urandom(8).hex()
    out = run(server, "list-panes", "-t", pane_id, "-F", _FORMAT, ";",
              "display-message", "-p", "-t", pane_id, token, ";",
              "capture-pane", "-p", "-t", pane_id).decode(errors="replace")
    listing, _, screen = out.partition(token + "\n")
    for line in listing.splitlines():
        index, found, active, command, in_mode, pid, cursor, dead = line.split("\t")
        if found == pane_id:
            if dead == "1":
                raise Missing(dead_pane(pane_id))
            return Pane(pane_id, command, in_mode == "1", screen, _pid(pid), _pid(cursor))
    raise Missing(f"can't find pane: {pane_id}")


# tmux sends a command line to its server in one message of at most 16 KiB:
# longer batches are split.
BATCH_BYTES = 8000


def _batches(commands):
    """Join command argument lists with ';' into tmux argument lists of bounded size."""
    batch, size = [], 0
    for command in commands:
        length = sum(len(a) + 1 for a in command) + 2
        if batch and size + length > BATCH_BYTES:
            yield batch[:-1]
            batch, size = [], 0
        batch += [*command, ";"]
        size += length
    if batch:
        yield batch[:-1]


def capture_all(server, panes):
    """Look at many PANES with one tmux call: set each one's command, mode and screen.

    Each pane's part of the output starts with a line holding a random token
    (no screen can contain it) and its current command.  Returns False, setting
    nothing, if any pane has gone meanwhile: callers then look pane by pane.
    """
    if not panes:
        return True
    token = os.urandom(8).hex()
    commands = []
    for pane in panes:
        commands += [["display-message", "-p", "-t", pane.id,
                      # (the format goes through strftime: no literal '%' in it)
                      f"{token}\t#{{pane_id}}\t#{{pane_pid}}\t#{{cursor_y}}\t#{{pane_dead}}\t"
                      "#{pane_current_command}\t#{pane_in_mode}"],
                     ["capture-pane", "-p", "-t", pane.id]]
    try:
        out = "".join(run(server, *args).decode(errors="replace")
                      for args in _batches(commands))
    except Missing:
        return False
    seen = {}
    for chunk in out.split(token + "\t")[1:]:
        head, _, screen = chunk.partition("\n")
        pane_id, _, rest = head.partition("\t")
        pid, _, rest = rest.partition("\t")
        cursor, _, rest = rest.partition("\t")
        dead, _, rest = rest.partition("\t")
        command, _, in_mode = rest.rpartition("\t")
        if dead != "1":  # a dead pane counts as gone
            seen[pane_id] = (command, in_mode == "1", screen, _pid(pid), _pid(cursor))
    if any(p.id not in seen for p in panes):
        return False
    for pane in panes:
        pane.command, pane.in_mode, pane.screen, pane.pid, pane.cursor = seen[pane.id]
    return True


def paste_all(server, notes, spool):
    """Type many notes, {pane id: text}, with few tmux calls; return the pane ids typed.

    Each text goes through a uniquely named buffer loaded from a private file
    in SPOOL (one stdin cannot feed many buffers).  Every buffer is loaded
    before any is pasted; tmux stops a command line at its first failing
    command, and paste-buffer -d deletes each buffer it pastes, so the buffers
    still there afterwards are exactly the notes not typed.
    """
    names, files = {}, []
    try:
        for pane_id, text in notes.items():
            name = f"orch-{os.getpid()}-{next(_buffer_numbers)}"
            path = os.path.join(spool, name)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                files.append(path)
                with os.fdopen(fd, "wb") as f:
                    f.write(text.encode())
            except OSError as e:  # a full disk: nothing was pasted yet, nothing will be
                raise OrchError(f"cannot write a note to {spool}: {e.strerror}; nothing was "
                                "typed", IOERR) from None
            names[name] = pane_id
        try:
            for args in _batches([["load-buffer", "-b", name, os.path.join(spool, name)]
                                  for name in names]):
                run(server, *args)
        except Missing:
            _delete_buffers(server, names)
            return set()
        failed = False
        for args in _batches([command for name, pane_id in names.items() for command in (
                ["copy-mode", "-q", "-t", pane_id],
                ["paste-buffer", "-p", "-d", "-b", name, "-t", pane_id])]):
            try:
                run(server, *args)
            except Missing:
                failed = True
        if not failed:
            return set(names.values())
        # A pane went away: the notes after it in its batch are typed one by one.
        try:
            left = set(run(server, "list-buffers", "-F", "#{buffer_name}").decode().split())
        except Missing:
            return set()  # the server itself is gone
        typed = {pane_id for name, pane_id in names.items() if name not in left}
        for name in [n for n in names if n in left]:
            try:
                run(server, "copy-mode", "-q", "-t", names[name], ";",
                    "paste-buffer", "-p", "-d", "-b", name, "-t", names[name])
                typed.add(names[name])
            except Missing:
                _delete_buffers(server, [name])
        return typed
    finally:
        for path in files:
            os.unlink(path)


def _delete_buffers(server, names):
    """Delete those of NAMES that are still buffers; return them (all, if tmux is gone)."""
    try:
        left = set(run(server, "list-buffers", "-F", "#{buffer_name}").decode().split())
        for name in left & set(names):
            run(server, "delete-buffer", "-b", name)
        return left & set(names)
    except Missing:
        return set(names)


def keys_all(server, pane_ids, key):
    """Press KEY in each pane with one tmux call; return the ids it was not pressed in."""
    missed = []
    for args in _batches([["send-keys", "-t", p, key] for p in pane_ids]):
        batch = args[2::5]  # the pane ids of this batch, in order
        try:
            run(server, *args)
        except Missing as e:
            # tmux stops at the first pane it cannot find, named in its message:
            # the panes before it got the key, the ones after it get it one by one.
            failed = next((i for i, p in enumerate(batch) if str(e).endswith(p)), -1)
            missed += [batch[failed]] if failed >= 0 else []
            for pane_id in batch[failed + 1:]:
                try:
                    send_key(server, pane_id, key)
                except Missing:
                    missed.append(pane_id)
    return missed


def paste(server, pane_id, text):
    """Type TEXT into the pane literally, as one paste."""
    name = f"orch-{os.getpid()}-{next(_buffer_numbers)}"
    # A pane in copy mode would take the text and the Enter as mode commands.
    try:
        run(server, "copy-mode", "-q", "-t", pane_id, ";",
            "load-buffer", "-b", name, "-", ";",
            "paste-buffer", "-p", "-d", "-b", name, "-t", pane_id,
            input=text.encode())
    except Missing:
        try:  # the pane vanished between load and paste: leave no buffer behind
            run(server, "delete-buffer", "-b", name)
        except Missing:
            pass
        raise


def send_key(server, pane_id, key="Enter"):
    """Press one named key (Enter, Escape) in the pane: never text."""
    run(server, "send-keys", "-t", pane_id, key)


def capture(server, pane_id):
    """The visible screen of the pane, as text."""
    return run(server, "capture-pane", "-p", "-t", pane_id).decode(errors="replace")


def has_session(server, name):
    try:
        run(server, "has-session", "-t", f"={name}")
        return True
    except Missing:
        return False
