"""The write-ahead record of worktree moves, so that a pass killed in the middle
of one can be finished or undone by the next.

Rules:
- Before a move touches anything, its entry is written and fsynced:
  <state>/sync/moves/<repo key>.<worktree key>.json holding the worktree, its
  git dir, branch, old and new commit, and the pid and start time of the
  process moving it.  It is removed only once the worktree is consistent
  again (moved, or left as it was).
- The move's index.lock is made under another name, holding a random token,
  and its inode is written to the entry (fsynced) before it is linked to
  index.lock.  An index.lock is orch-sync's only when it is that inode and
  holds that token (a deleted file's inode number is soon reused); one that
  is not is never touched.
- Every git child that can hold a lock (update-index, read-tree, update-ref,
  checkout-index) is listed (pid and start time) while it runs, and carries
  ORCH_SYNC_MOVE=<the move's token> in its environment, so that recovery can
  wait for it, or end it, before it looks: a kill -9 of orch-sync leaves its
  child running with git's own locks held, and may come between starting a
  child and writing its pid down.
- One entry per worktree: a move never starts while an entry for its
  worktree is left.  Entries are read and acted on only under the
  repository's lock (one pass at a time).
"""

import hashlib
import json
import os

from .. import locks, paths
from . import repos


class Entry:
    """One move in progress (or left behind by a process that died)."""

    def __init__(self, record, path):
        self.record, self.file = record, path

    def __getattr__(self, name):
        try:
            return self.record[name]
        except KeyError:
            raise AttributeError(name) from None

    def save(self, durable=False):
        paths.write_atomic(self.file, json.dumps(self.record, sort_keys=True), durable=durable)

    def own(self, fd):
        """Mark the open lock file FD as ours: it gets this move's token, and its inode
        is written down (fsynced) before it is used."""
        token = self.record["token"].encode()
        os.write(fd, token)
        st = os.fstat(fd)
        self.record["files"].append([st.st_dev, st.st_ino])
        self.save(durable=True)

    def owns(self, path):
        """True when PATH is a lock file this move made: one of its inodes (an inode
        number is reused at once for a new file) holding its token."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            st = os.fstat(fd)
            token = self.record["token"].encode()
            return ([st.st_dev, st.st_ino] in self.record["files"]
                    and os.read(fd, len(token) + 1) == token)
        finally:
            os.close(fd)

    def child(self, pid):
        """A git child started: list it (not durable: a power loss ends it too)."""
        self.record["children"].append([pid, locks.process_start(pid)])
        self.save()

    @property
    def marker(self):
        """What this move's git children carry in their environment (ORCH_SYNC_MOVE)."""
        return self.record["token"].split()[-1]

    def mine(self):
        """True when the process that wrote this entry is this one."""
        return self.pid == os.getpid() and locks.alive(self.pid, self.start)

    def creator_alive(self):
        return locks.alive(self.pid, self.start)

    def remove(self):
        try:
            os.unlink(self.file)
        except FileNotFoundError:
            pass


def moves_dir():
    return paths.sub("sync", "moves", create_dir=True)


def _file(repo, gitdir):
    key = hashlib.sha1(gitdir.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return os.path.join(moves_dir(), f"{repos.repo_key(repo)}.{key}.json")


def begin(repo, path, gitdir, branch, old, new, action):
    """The entry of a move about to happen, None if one is left for this worktree.  It
    is first written (fsynced) with the lock file it makes (Entry.own), before
    anything of the worktree's is touched."""
    file = _file(repo, gitdir)
    if os.path.lexists(file):
        return None
    entry = Entry({"repo": repo.common_dir, "path": path, "gitdir": gitdir, "branch": branch,
                   "old": old, "new": new, "action": action, "pid": os.getpid(),
                   "start": locks.process_start(os.getpid()), "stage": "begun", "files": [],
                   "token": f"orch-sync move {os.urandom(8).hex()}\n",
                   "children": []},
                  file)
    return entry


def left(repo, gitdir=None):
    """The entries left for REPO (or for the worktree whose git dir is GITDIR)."""
    if gitdir is not None:
        file = _file(repo, gitdir)
        return [e for e in (_load(file),) if e is not None]
    prefix = f"{repos.repo_key(repo)}."
    try:
        names = sorted(os.listdir(moves_dir()))
    except OSError:
        return []
    found = (_load(os.path.join(moves_dir(), n)) for n in names
             if n.startswith(prefix) and n.endswith(".json"))
    return [e for e in found if e is not None]


def _load(file):
    try:
        fd = paths.open_private(file, os.O_RDONLY)
    except Exception:  # noqa: BLE001 - missing, or not a plain file of ours: not an entry
        return None
    try:
        with os.fdopen(fd, "rb") as f:
            record = json.loads(f.read())
    except (OSError, ValueError):
        # Written atomically, so never half; an unreadable one was not written by us.
        return None
    if not isinstance(record, dict) or not {"gitdir", "old", "new", "files"} <= set(record):
        return None
    return Entry(record, file)
