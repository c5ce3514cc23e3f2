"""The repositories orch-sync serves: each one's key, lock, state files and row.

Rules: a repository is named by its common git directory (shared by all its
worktrees); its key (a hash of that path) names its lock (sync.KEY: one pass
per repository at a time, across processes) and its files under
<state>/sync/.  Its row in sync_repos says where its hooks are (NULL: not
installed) and what the last pass found.
"""

import os

from .. import clock, git, paths, store


def repo_key(repo):
    import hashlib
    return hashlib.sha1(repo.common_dir.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def lock_name(repo):
    return f"sync.{repo_key(repo)}"


def sync_dir():
    return paths.sub("sync", create_dir=True)


def register(conn, repo, hooks=None, **fields):
    """Create or update REPO's row; HOOKS (when given) records an install."""
    with store.tx(conn):
        register_rows(conn, repo, hooks, **fields)


def register_rows(conn, repo, hooks=None, **fields):
    conn.execute("INSERT INTO sync_repos (repo, top, bare, updated) VALUES (?, ?, ?, ?) "
                 "ON CONFLICT(repo) DO UPDATE SET top = excluded.top, "
                 "updated = excluded.updated",
                 (repo.common_dir, repo.top, int(repo.bare), clock.now()))
    if hooks is not None:
        conn.execute("UPDATE sync_repos SET hooks = ? WHERE repo = ?", (hooks, repo.common_dir))
    for key, value in fields.items():
        conn.execute(f"UPDATE sync_repos SET {key} = ? WHERE repo = ?",
                     (value, repo.common_dir))


def installed(conn):
    """The repositories whose hooks are installed from this state directory."""
    rows = conn.execute("SELECT repo, hooks, bare FROM sync_repos WHERE hooks IS NOT NULL "
                        "ORDER BY repo").fetchall()
    return [git.Repo(r["repo"], r["hooks"], bool(r["bare"])) for r in rows]


def check_store(conn):
    """Read each table a pass uses once: an unreadable store raises here (the daemon's
    check in the foreground) rather than in a detached daemon that then dies."""
    for table in ("sync_repos", "sync_worktrees", "sync_conflicts", "sync_predictions",
                  "sync_targets"):
        conn.execute(f"SELECT count(*) FROM {table}").fetchone()


def normal_url(url, cwd):
    if not url:
        return None
    if "://" in url or (":" in url.split("/")[0] and not url.startswith("/")):
        return url
    path = url if os.path.isabs(url) else os.path.join(cwd, url)
    return os.path.realpath(path)
