"""The orchestration registry: one row and one private directory per run of an agent team.

Rules:
- A session name is `<slug>-<8 hex>`, allocated under one lock (LOCK) so that
  parallel `new`s never pick the same one, and never one that is a tmux session
  on the server or a registered orchestration already.  Its registry directory
  <state>/orchestrations/<session>/ is created 0700 with mkdir(2), which fails
  rather than reuse a directory that exists.
- An orchestration is active while its tmux session exists on the server it
  was created for (its socket path is stored), else ended; `end` marks it ended
  whatever tmux says.  tmux is asked once per server (list-sessions).
- Pruning counts from when an orchestration was ended, or from when a prune
  first found its session gone (gone_since, cleared if the session is back), so
  a team that only just finished is never pruned.  It never touches one whose
  session exists or whose server cannot be asked, and never deletes a
  directory that still has files unless told to (rmdir(2) decides, atomically).
"""

import os
import re

from . import clock, locks, paths, store, tmux
from .errors import CANTCREAT, DATAERR, IOERR, OrchError

LOCK = "orch.orchestrations"
MAX_PROJECT = 200
MAX_SLUG = 48
_OUTSIDE = re.compile(r"[^a-z0-9_]+")
_SESSION = re.compile(r"[a-z0-9_][a-z0-9_-]*-[0-9a-f]{8}")


def slug(project):
    """'My App!' -> 'my-app': lower case, runs outside [a-z0-9_] as one '-', '-' trimmed."""
    if (not project or len(project) > MAX_PROJECT
            or any(ord(c) < 32 or c == "\x7f" for c in project)):
        raise OrchError(f"bad project name: {project!r} (1 to {MAX_PROJECT} printable "
                        "characters)", DATAERR)
    text = _OUTSIDE.sub("-", project.lower()).strip("-")[:MAX_SLUG].strip("-")
    if not text:
        raise OrchError(f"bad project name: {project!r} (it needs a letter, digit or _)",
                        DATAERR)
    return text


def root():
    return paths.sub("orchestrations", create_dir=True)


def create(conn, project, server):
    """Register a new orchestration of PROJECT on tmux SERVER; return its row as a dict."""
    base = slug(project)
    with locks.held(LOCK):
        for _ in range(32):
            session = f"{base}-{os.urandom(4).hex()}"
            if (conn.execute("SELECT 1 FROM orchestrations WHERE session = ?",
                             (session,)).fetchone() or tmux.has_session(server, session)):
                continue
            directory = os.path.join(root(), session)
            try:
                os.mkdir(directory, paths.DIR_MODE)
            except FileExistsError:
                continue
            except OSError as e:
                raise OrchError(f"cannot create {directory}: {e.strerror}", CANTCREAT) from None
            os.chmod(directory, paths.DIR_MODE)  # exactly 0700, whatever the umask
            now = clock.now()
            try:
                with store.tx(conn):
                    conn.execute("INSERT INTO orchestrations(session, project, server, dir, "
                                 "status, created) VALUES (?, ?, ?, ?, 'open', ?)",
                                 (session, project, server, directory, now))
            except BaseException:
                os.rmdir(directory)
                raise
            return get(conn, session)
    raise OrchError("could not find a free session name (32 tries)", CANTCREAT)


def get(conn, session):
    row = conn.execute("SELECT * FROM orchestrations WHERE session = ?", (session,)).fetchone()
    return dict(row) if row else None


def sessions_on(server):
    """The names of the tmux sessions on SERVER (empty if it is not running), or None if
    tmux gave another answer (a hung or broken server: nothing can be concluded)."""
    try:
        out = tmux.run(server, "list-sessions", "-F", "#{session_name}")
    except tmux.Missing as e:
        return set() if str(e).startswith("tmux server not running") else None
    return set(out.decode(errors="replace").splitlines())


def _with_state(rows):
    """Rows as dicts with 'state' (active/ended) and 'exists' (True/False/None)."""
    servers = {}
    result = []
    for row in rows:
        o = dict(row)
        if o["server"] not in servers:
            servers[o["server"]] = sessions_on(o["server"])
        names = servers[o["server"]]
        o["exists"] = None if names is None else o["session"] in names
        o["state"] = "ended" if o["status"] == "ended" or o["exists"] is False else "active"
        result.append(o)
    return result


def listing(conn, include_ended=False):
    rows = conn.execute("SELECT * FROM orchestrations ORDER BY created, session").fetchall()
    return [o for o in _with_state(rows) if include_ended or o["state"] == "active"]


def as_json(o):
    return {"session": o["session"], "project": o["project"], "state": o["state"],
            "created": clock.iso(o["created"]), "ended": clock.iso(o["ended"]),
            "dir": o["dir"], "server": o["server"]}


def discard(conn, session):
    """Forget SESSION and remove its (empty) directory: undoing a create() whose
    orchestration never started (orch-team up failing half way)."""
    o = get(conn, session)
    if o is None:
        return
    with store.tx(conn):
        conn.execute("DELETE FROM orchestrations WHERE session = ?", (session,))
    try:
        os.rmdir(o["dir"])
    except FileNotFoundError:
        pass


def end(conn, session):
    """Mark SESSION ended; False if there is no such orchestration."""
    with store.tx(conn):
        cur = conn.execute("UPDATE orchestrations SET status = 'ended', "
                           "ended = COALESCE(ended, ?) WHERE session = ?", (clock.now(), session))
    return cur.rowcount > 0


def prune(conn, older, delete=False):
    """Forget orchestrations ended more than OLDER seconds ago, and their empty directories.

    Returns (number forgotten, rows kept because their directory has files).
    """
    import shutil
    now = clock.now()
    gone, kept = 0, []
    with locks.held(LOCK):
        rows = _with_state(conn.execute("SELECT * FROM orchestrations").fetchall())
        for o in rows:
            if o["exists"] is not False:  # its session is there, or tmux cannot say
                if o["exists"] and o["gone_since"] is not None:
                    with store.tx(conn):
                        conn.execute("UPDATE orchestrations SET gone_since = NULL "
                                     "WHERE session = ?", (o["session"],))
                continue
            since = o["ended"] if o["status"] == "ended" else o["gone_since"]
            if since is None:
                with store.tx(conn):
                    conn.execute("UPDATE orchestrations SET gone_since = ? WHERE session = ?",
                                 (now, o["session"]))
                since = now
            if now - since < older:
                continue
            directory = os.path.join(root(), o["session"])
            if _SESSION.fullmatch(o["session"]) and os.path.lexists(directory):
                try:
                    os.rmdir(directory)
                except OSError:
                    if not delete or os.path.islink(directory):
                        kept.append(o)
                        continue
                    try:
                        shutil.rmtree(directory)
                    except OSError as e:
                        raise OrchError(f"cannot delete {directory}: {e.strerror}",
                                        IOERR) from None
            with store.tx(conn):
                conn.execute("DELETE FROM orchestrations WHERE session = ?", (o["session"],))
            gone += 1
    return gone, kept
