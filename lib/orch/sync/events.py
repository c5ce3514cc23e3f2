"""The events the hooks record, and the FIFO that wakes the daemon.

Rules:
- A hook appends one line to <state>/sync/<key>.events, a file only orch-sync
  creates (0600), and only when it is a regular file, not a symlink; orch-sync
  opens it O_NOFOLLOW.  A consumer holding the repository's lock reads the
  file and truncates it, then passes; a pass that fails appends the lines
  back, so a later run retries.  A line that lands between the read and the
  truncation is lost as text but not as a trigger: the hook ran after its ref
  update, so the pass that follows the truncation sees the update.  Events
  arriving during a pass leave the file non-empty: one more pass, however many.
- Then the hook writes one byte to <state>/sync/wake, a FIFO the daemon creates
  and holds open, so an idle daemon sleeps until there is something to do.
  The hook opens it read-write (`3<>`), which never blocks, with or without a
  reader (a write-only open of a FIFO waits for one), and only when it is a
  FIFO; with no daemon, the byte is discarded when the hook closes it.
"""

import os
import stat

from .. import git, paths
from . import repos

WAKE_FIFO = "wake"


def events_path(repo, create=False):
    path = os.path.join(repos.sync_dir(), f"{repos.repo_key(repo)}.events")
    if create:
        os.close(paths.open_private(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND))
    return path


def wake_path():
    return os.path.join(repos.sync_dir(), WAKE_FIFO)


def wake():
    """Tell a sleeping daemon to look (no-op when none listens)."""
    paths.poke_fifo(wake_path())


def pending(repo):
    """True when the repository's events file holds events (one lstat).  Anything
    but a regular file there (a planted symlink) counts too, so that the pass
    reading it refuses it out loud."""
    try:
        st = os.lstat(events_path(repo))
    except OSError:
        return False
    return st.st_size > 0 or not stat.S_ISREG(st.st_mode)


def take_events(repo):
    """Read and empty the events file; return its lines (recreating it if it went missing)."""
    fd = paths.open_private(events_path(repo), os.O_RDWR | os.O_CREAT)
    try:
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
        data = b"".join(chunks)
        if data:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)
    return [line for line in data.decode("utf-8", "replace").split("\n") if line]


def requeue(repo, lines):
    """Put back the events of a pass that failed, so that a later run retries it."""
    if not lines:
        return
    try:
        fd = os.open(events_path(repo), os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.write(fd, "".join(f"{line}\n" for line in lines).encode("utf-8", "surrogateescape"))
    except OSError:
        pass
    finally:
        os.close(fd)


def poke_peers(conn, repo, lines):
    """A remote-tracking branch moved here: give every installed clone of the same
    remote an event too, so each fetches and syncs (separate clones)."""
    if not any("\trefs/remotes/" in line for line in lines):
        return
    row = conn.execute("SELECT remote_url FROM sync_repos WHERE repo = ?",
                       (repo.common_dir,)).fetchone()
    if not row or not row["remote_url"]:
        return
    peers = conn.execute("SELECT repo FROM sync_repos WHERE remote_url = ? AND repo != ? AND "
                         "hooks IS NOT NULL", (row["remote_url"], repo.common_dir)).fetchall()
    for peer in peers:
        path = events_path(git.Repo(peer["repo"], None, False))
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            os.write(fd, f"peer\t-\t{repo.top}\n".encode("utf-8", "surrogateescape"))
        finally:
            os.close(fd)
