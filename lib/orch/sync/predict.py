"""Predicted conflicts: the merge-tree matrix, the notices to agents, the target map.

Rules: conflicts are kept per pair of branches (open or resolved); an agent
mapped to a tmux target is told (tasks.add) when a conflict names a file it
has not been told about, once per side.  Predictions are cached by commit
pair.  Only a pass that saw its base records conflicts: one that could not
see it leaves them as they were, so nobody is told twice.
"""

import os

from .. import clock, git, store
from ..errors import DATAERR, UNAVAILABLE, OrchError
from . import context, engine, repos


def nodes(ctx, outcomes):
    """The branches a matrix covers: each worktree's branch (not the base), then the base."""
    found = []
    for o in outcomes:
        if o["branch"] and o["head"] and o["branch"] != ctx.base_branch:
            found.append({"name": o["branch"], "head": o["head"], "worktree": o["path"]})
    found.append({"name": ctx.base_name, "head": ctx.base_commit, "worktree": None})
    return found


def matrix(conn, ctx, outcomes, cached=True):
    """Every pair of agent branches and each branch against the base, predicted.

    Returns dicts {a, b, a_head, b_head, clean, files, error}.
    """
    import json
    found = nodes(ctx, outcomes)
    agents, base = found[:-1], found[-1]
    wanted = [(x, y) for i, x in enumerate(agents) for y in agents[i + 1:]]
    wanted += [(x, base) for x in agents]
    commits = {tuple(sorted((x["head"], y["head"]))) for x, y in wanted}
    known = {}
    if cached:
        for a, b in commits:
            row = conn.execute("SELECT files FROM sync_predictions WHERE a = ? AND b = ?",
                               (a, b)).fetchone()
            if row is not None:
                known[(a, b)] = json.loads(row["files"])
    todo = [pair for pair in commits if pair not in known and pair[0] != pair[1]]
    fresh = git.merge_trees(ctx.cwd, todo)
    now = clock.now()
    with store.tx(conn):
        for pair, files in fresh.items():
            if not isinstance(files, git.GitError):
                conn.execute("INSERT OR REPLACE INTO sync_predictions (a, b, files, at) "
                             "VALUES (?, ?, ?, ?)", (*pair, json.dumps(files), now))
        conn.execute("DELETE FROM sync_predictions WHERE at < ?", (now - 86400,))
    known.update(fresh)
    pairs = []
    for x, y in wanted:
        key = tuple(sorted((x["head"], y["head"])))
        files = [] if key[0] == key[1] else known.get(key, [])
        error = str(files) if isinstance(files, git.GitError) else None
        files = [] if error else files
        a, b = (x, y) if y is base or x["name"] <= y["name"] else (y, x)
        pairs.append({"a": a["name"], "b": b["name"], "a_head": a["head"], "b_head": b["head"],
                      "a_worktree": a["worktree"], "b_worktree": b["worktree"],
                      "base": b is base, "clean": not files and not error, "files": files,
                      "error": error})
    return pairs


def conflicts_now(conn, repo):
    """Compute the conflict matrix afresh (no sync); record it; return (ctx, pairs)."""
    ctx = context.load(repo)
    trees = context.worktrees(ctx)
    ctx.resolve(trees)
    if ctx.error:
        raise OrchError(f"{repo.top}: {ctx.error}", UNAVAILABLE)
    outcomes = [engine.outcome(w) for w in trees if w.branch and w.head]
    pairs = matrix(conn, ctx, outcomes, cached=False)
    repos.register(conn, repo)
    with store.tx(conn):
        record_conflicts(conn, ctx, pairs, clock.now())
    return ctx, pairs


def record_conflicts(conn, ctx, pairs, now):
    import json
    repo = ctx.repo.common_dir
    current = set()
    for p in pairs:
        key = (p["a"], p["b"])
        if not p["files"]:
            continue
        current.add(key)
        row = conn.execute("SELECT status FROM sync_conflicts WHERE repo = ? AND a = ? AND b = ?",
                           (repo, *key)).fetchone()
        if row is None:
            conn.execute("INSERT INTO sync_conflicts (repo, a, b, a_head, b_head, a_worktree, "
                         "b_worktree, files, status, first_seen, last_seen) VALUES "
                         "(?, ?, ?, ?, ?, ?, ?, ?, 'open', ?, ?)",
                         (repo, *key, p["a_head"], p["b_head"], p["a_worktree"],
                          p["b_worktree"], json.dumps(p["files"]), now, now))
        else:
            reopen = row["status"] != "open"
            conn.execute("UPDATE sync_conflicts SET a_head = ?, b_head = ?, a_worktree = ?, "
                         "b_worktree = ?, files = ?, status = 'open', last_seen = ?"
                         + (", first_seen = ?, notified = NULL" if reopen else "")
                         + " WHERE repo = ? AND a = ? AND b = ?",
                         (p["a_head"], p["b_head"], p["a_worktree"], p["b_worktree"],
                          json.dumps(p["files"]), now, *((now,) if reopen else ()), repo, *key))
    for row in conn.execute("SELECT a, b FROM sync_conflicts WHERE repo = ? AND status = 'open'",
                            (repo,)).fetchall():
        if (row["a"], row["b"]) not in current:
            conn.execute("UPDATE sync_conflicts SET status = 'resolved', last_seen = ? "
                         "WHERE repo = ? AND a = ? AND b = ?", (now, repo, row["a"], row["b"]))


def _conflict_note(row, side, files):
    shown = ", ".join(files[:10]) + (f" and {len(files) - 10} more" if len(files) > 10 else "")
    if row["b_worktree"] is None:
        return (f"orch-sync: your branch {row['a']} would conflict with {row['b']} in "
                f"{shown}. It was not merged; merge {row['b']} yourself and resolve it when "
                "you reach a good point.")
    other = row["b"] if side == "a" else row["a"]
    where = row["b_worktree"] if side == "a" else row["a_worktree"]
    return (f"orch-sync: your branch {row[side]} and {other} (worktree {where}) would conflict "
            f"in {shown}. Coordinate with the agent on {other} before either of you lands it.")


def notify(conn, ctx, outcomes=None):
    """Tell mapped agents about open conflicts with files they were not told about."""
    import hashlib
    import json

    from .. import tasks
    repo = ctx.repo.common_dir
    rows = conn.execute("SELECT * FROM sync_conflicts WHERE repo = ? AND status = 'open'",
                        (repo,)).fetchall()
    for row in rows:
        files = json.loads(row["files"])
        told = json.loads(row["notified"] or "{}")
        changed = False
        for side in ("a", "b"):
            path = row[f"{side}_worktree"]
            if path is None:
                continue
            target = conn.execute("SELECT target, server FROM sync_targets WHERE worktree = ?",
                                  (os.path.realpath(path),)).fetchone()
            if target is None or set(files) <= set(told.get(side, [])):
                continue
            key = "orch-sync:" + hashlib.sha1(
                f"{repo}\0{row['a']}\0{row['b']}\0{side}".encode("utf-8", "surrogateescape")
            ).hexdigest()[:16]
            try:
                tasks.add(conn, target["target"], target["server"],
                          _conflict_note(row, side, files), clock.now(), key=key)
            except OrchError:
                continue  # being delivered right now, or the store is busy: next pass
            told[side] = sorted(set(told.get(side, [])) | set(files))
            changed = True
        if changed:
            with store.tx(conn):
                conn.execute("UPDATE sync_conflicts SET notified = ? WHERE repo = ? AND a = ? "
                             "AND b = ?", (json.dumps(told), repo, row["a"], row["b"]))


def worktree_top(path):
    if not os.path.isdir(path):
        raise OrchError(f"not a directory: {path}", DATAERR)
    try:
        top = git.out(os.path.abspath(path), "rev-parse", "--show-toplevel")
    except git.GitError as e:
        raise OrchError(f"not a git worktree: {path} ({e})", DATAERR) from None
    return os.path.realpath(top)


def map_target(conn, path, target, server):
    top = worktree_top(path)
    with store.tx(conn):
        conn.execute("INSERT INTO sync_targets (worktree, target, server, created) VALUES "
                     "(?, ?, ?, ?) ON CONFLICT(worktree) DO UPDATE SET target = excluded.target, "
                     "server = excluded.server, created = excluded.created",
                     (top, target, server, clock.now()))
        # Tell the newly mapped agent about conflicts it was never told of.
        conn.execute("UPDATE sync_conflicts SET notified = NULL WHERE status = 'open' AND "
                     "(a_worktree = ? OR b_worktree = ?)", (top, top))
    return top


def target_of(conn, path):
    """(target, server) the worktree at PATH is mapped to, or None."""
    top = os.path.realpath(path)
    row = conn.execute("SELECT target, server FROM sync_targets WHERE worktree = ?",
                       (top,)).fetchone()
    return (row[0], row[1]) if row else None


def unmap_target(conn, path):
    try:
        top = worktree_top(path)
    except OrchError:  # the worktree may be gone already
        top = os.path.realpath(path)
    with store.tx(conn):
        gone = conn.execute("DELETE FROM sync_targets WHERE worktree = ?", (top,)).rowcount
    return top if gone else None
