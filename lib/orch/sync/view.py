"""What passes recorded, read without running git: for status, the status file
and orch-dash.

Rules: every line shown goes through text.visible or text.table_lines, so
paths, branches, file names and messages holding control characters stay one
line each and never reach a terminal raw.
"""

import _thread
import os

from .. import clock, locks, paths, text
from . import DAEMON_LOCK, repos

UNLIMITED = 1 << 30    # the status table's width: its last column is never cut short


_status_file_lock = _thread.allocate_lock()


def recorded_repos(conn):
    """Every repository orch-sync knows, as dicts: repo (common git dir), top, hooks
    (None: not installed), base, policy, remote, last_pass, last_event (epoch), error."""
    rows = conn.execute("SELECT * FROM sync_repos ORDER BY top").fetchall()
    return [{"repo": r["repo"], "top": r["top"], "hooks": r["hooks"], "base": r["base"],
             "policy": r["policy"], "remote": r["remote"], "last_pass": r["last_pass"],
             "last_event": r["last_event"], "error": r["error"]} for r in rows]


def recorded_status(conn, repo=None):
    """What the last pass found per worktree, without running git: a list of dicts
    with repo, top, path, branch, head, base, ahead, behind, dirty (bool or None),
    state (synced, updated, skipped, conflict), reason, files (list), action,
    target (tmux target or None), checked and last_sync (epoch seconds or None)."""
    import json
    where, params = ("WHERE w.repo = ?", (repo,)) if repo else ("", ())
    rows = conn.execute(
        "SELECT w.*, r.top, t.target FROM sync_worktrees w JOIN sync_repos r ON r.repo = w.repo "
        f"LEFT JOIN sync_targets t ON t.worktree = w.path {where} ORDER BY r.top, w.path",
        params).fetchall()
    return [{"repo": r["repo"], "top": r["top"], "path": r["path"], "branch": r["branch"],
             "head": r["head"], "base": r["base"], "ahead": r["ahead"], "behind": r["behind"],
             "dirty": None if r["dirty"] is None else bool(r["dirty"]), "state": r["state"],
             "reason": r["reason"], "files": json.loads(r["files"] or "[]"),
             "action": r["action"], "target": r["target"], "checked": r["checked"],
             "last_sync": r["last_sync"]} for r in rows]


def recorded_conflicts(conn, repo=None, open_only=True):
    """Predicted conflicts as recorded, without running git: dicts with repo, a, b
    (branch names; b is the base when b_worktree is None), a_head, b_head,
    a_worktree, b_worktree, files (list), status (open, resolved), first_seen,
    last_seen (epoch seconds)."""
    import json
    clauses, params = [], []
    if repo:
        clauses.append("repo = ?")
        params.append(repo)
    if open_only:
        clauses.append("status = 'open'")
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = conn.execute(f"SELECT * FROM sync_conflicts {where} ORDER BY repo, a, b",
                        params).fetchall()
    return [{"repo": r["repo"], "a": r["a"], "b": r["b"], "a_head": r["a_head"],
             "b_head": r["b_head"], "a_worktree": r["a_worktree"], "b_worktree": r["b_worktree"],
             "files": json.loads(r["files"]), "status": r["status"],
             "first_seen": r["first_seen"], "last_seen": r["last_seen"]} for r in rows]


def state_text(row):
    """synced / updated: ACTION / skipped: REASON / conflict: FILES, as people read it."""
    state = row["state"]
    if state == "updated" and row.get("reason"):
        return f"updated: {row['reason']}"
    if state == "skipped":
        return f"skipped: {row['reason']}"
    if state == "conflict":
        return f"conflict: {', '.join(row['files'])}"
    return state


def attention(rows):
    """True when any worktree is skipped or in conflict (status exit 1)."""
    return any(r["state"] not in ("synced", "updated") for r in rows)


def daemon_pid():
    record_ = locks.read_holder(DAEMON_LOCK)
    return record_["pid"] if record_ else None


def status_path():
    return os.path.join(repos.sync_dir(), "status.txt")


def status_text(conn, repo=None):
    """The view for people: per repository a heading, a table of its worktrees (named
    relative to the directory holding the repository) and its open conflicts."""
    out = []
    statuses = recorded_status(conn, repo)
    for r in recorded_repos(conn):
        if repo and r["repo"] != repo:
            continue
        rows = [w for w in statuses if w["repo"] == r["repo"]]
        last = clock.local(r["last_pass"]) if r["last_pass"] else "never"
        # Paths, branches, file names and messages may hold control characters:
        # every line goes through text.visible or text.table_lines, so each stays one line.
        out.append(f"{'' if not out else chr(10)}" + text.visible(
            f"{r['top']}  (base {r['base'] or '?'}, policy {r['policy'] or 'merge'}, hooks "
            f"{'installed' if r['hooks'] else 'not installed'}, last pass {last})") + "\n")
        if r["error"]:
            out.append(f"  {text.visible('error: ' + r['error'])}\n")
        table = text.table_lines(
            [(_display(w["path"], r["top"]), w["branch"] or "-", (w["head"] or "-")[:7],
              _num(w["ahead"]), _num(w["behind"]),
              {True: "yes", False: "no"}.get(w["dirty"], "?"),
              clock.local(w["last_sync"], with_date=False) if w["last_sync"] else "-",
              state_text(w)) for w in rows],
            ["WORKTREE", "BRANCH", "HEAD", "AHEAD", "BEHIND", "DIRTY", "SYNCED", "STATE"],
            width=UNLIMITED)
        out.extend(f"  {line}\n" for line in table)
        for c in recorded_conflicts(conn, r["repo"]):
            out.append("  " + text.visible(f"conflict: {c['a']} with {c['b']}: "
                                          f"{', '.join(c['files'])}") + "\n")
    return "".join(out)


def _display(path, top):
    parent = os.path.dirname(top.rstrip("/"))
    if parent not in ("", "/") and path.startswith(parent + "/"):
        return path[len(parent) + 1:]
    home = os.environ.get("HOME", "").rstrip("/")
    if home and path.startswith(home + "/"):
        return "~" + path[len(home):]
    return path


def _num(value):
    return "-" if value is None else value


def write_status_file(conn):
    with _status_file_lock:
        body = f"orch-sync status at {clock.local(clock.now())}\n\n{status_text(conn)}"
        paths.write_atomic(status_path(), body)
