"""One pass over a repository, passes on events, and the daemon loop.

Rules:
- One pass per repository at a time (lock sync.<key>); repositories in parallel.
- Our own git commands run with ORCH_SYNC_QUIET=1, which our hooks honour, so
  a pass never triggers itself.
"""

import time

from .. import clock, locks, store, text
from ..errors import OrchError
from . import context, engine, events, journal, predict, repos, test_point, view

SAFETY_PASS_S = 300.0  # a full pass this often anyway: a worktree cleaned without a commit,
                       # a remote's new commits (orch.remote)
RETRY_S, RETRY_MAX_S = 1.0, 60.0  # the daemon's first and longest wait after a failed pass


def sync_pass(conn, repo, lines=()):
    """One pass over every worktree of REPO: settle what a dead pass left, sync,
    predict, record, tell.  Returns (outcomes, pairs)."""
    _report(repo, engine.recover(repo))
    ctx = context.load(repo)
    trees = context.worktrees(ctx)
    ctx.resolve(trees)
    test_point("listed")  # the worktrees and their heads are known; nothing is looked at
    outcomes = engine.sync_worktrees(ctx, trees)
    # A pass that could not see its base (a failed fetch, a bad orch.base) knows
    # nothing about conflicts: it leaves them as recorded, so none is resolved
    # and reopened, and nobody is told twice.
    pairs = None if ctx.error else predict.matrix(conn, ctx, outcomes)
    record(conn, ctx, outcomes, pairs, clock.now(), lines)
    if pairs is not None:
        predict.notify(conn, ctx, outcomes)
    view.write_status_file(conn)
    return outcomes, pairs or []


def settle(repo):
    """Settle the moves a dead pass left in REPO, unless a pass runs there now (it
    does that itself): what `status` does before it reads."""
    if not journal.left(repo):
        return
    try:
        with locks.held(repos.lock_name(repo), blocking=False):
            _report(repo, engine.recover(repo))
    except OrchError:
        pass  # a pass holds the lock: it settles them first


def _report(repo, lines):
    import sys
    for line in lines:
        print(f"orch-sync: {text.visible(f'{repo.top}: {line}')}", file=sys.stderr, flush=True)


def record(conn, ctx, outcomes, pairs, now, lines=()):
    """Write what one pass found: the repository's row, one row per worktree, and
    (unless PAIRS is None) the conflicts."""
    import json
    repo = ctx.repo
    repos.register(conn, repo)
    with store.tx(conn):
        conn.execute("UPDATE sync_repos SET base = ?, policy = ?, remote = ?, remote_url = ?, "
                     "last_pass = ?, error = ? WHERE repo = ?",
                     (ctx.base_name, ctx.policy, ctx.remote, ctx.remote_url, now, ctx.error,
                      repo.common_dir))
        if lines:
            conn.execute("UPDATE sync_repos SET last_event = ? WHERE repo = ?",
                         (now, repo.common_dir))
        seen = []
        for o in outcomes:
            seen.append(o["path"])
            current = o["state"] in ("synced", "updated")
            conn.execute(
                "INSERT INTO sync_worktrees (repo, path, branch, head, base, ahead, behind, "
                "dirty, state, reason, files, action, checked, last_sync) VALUES "
                "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(repo, path) DO UPDATE SET "
                "branch = excluded.branch, head = excluded.head, base = excluded.base, "
                "ahead = excluded.ahead, behind = excluded.behind, dirty = excluded.dirty, "
                "state = excluded.state, reason = excluded.reason, files = excluded.files, "
                "action = excluded.action, checked = excluded.checked, "
                "last_sync = COALESCE(excluded.last_sync, sync_worktrees.last_sync)",
                (repo.common_dir, o["path"], o["branch"], o["head"], ctx.base_name, o["ahead"],
                 o["behind"], None if o["dirty"] is None else int(o["dirty"]), o["state"],
                 o["reason"], json.dumps(o["files"]), o["action"], now,
                 now if current else None))
        marks = ", ".join("?" * len(seen))
        conn.execute(f"DELETE FROM sync_worktrees WHERE repo = ? AND path NOT IN ({marks})",
                     (repo.common_dir, *seen))
        if pairs is not None:
            predict.record_conflicts(conn, ctx, pairs, now)


def process(repo, force=False, once=False, stopping=None):
    """Pass over REPO while it has events (FORCE: at least once), one pass at a time
    per repository across all processes.  Returns the (outcomes, pairs) of each pass."""
    results = []
    with locks.held(repos.lock_name(repo)):
        conn = store.connect()
        try:
            while not (stopping is not None and stopping.is_set()):
                lines = events.take_events(repo)
                if not lines and not force:
                    break
                force = False
                try:
                    results.append(sync_pass(conn, repo, lines))
                except BaseException:
                    events.requeue(repo, lines)
                    raise
                events.poke_peers(conn, repo, lines)
                if once:
                    break
            test_point("passes-done")  # events arriving now are the daemon's to notice
        finally:
            conn.close()
    return results


def failure_text(repo, error):
    """ERROR (an OrchError or a bug) as one line naming REPO, for a log or stderr."""
    message = str(error) if isinstance(error, OrchError) else \
        f"internal error: {type(error).__name__}: {error}"
    if not message.startswith(f"{repo.top}: "):
        message = f"{repo.top}: {message}"
    return text.visible(message)


def run_events(served, stopping=None, rounds=3):
    """Process the recorded events of REPOS, in parallel across repositories; repeat
    while a pass gave another repository an event (clones of one remote).  Returns
    a list of (repository top, one-line message naming it) for those that failed."""
    failed = {}
    for _ in range(rounds):
        todo = [r for r in served if events.pending(r)]
        if not todo:
            break
        errors = _parallel_repos(todo, stopping)
        failed.update(errors)
    return sorted(failed.items())


def _parallel_repos(todo, stopping):
    def work(repo):
        try:
            process(repo, stopping=stopping)
        except Exception as e:  # noqa: BLE001 - reported with the others, as the daemon does
            return repo.top, failure_text(repo, e)
        return None

    if not todo:
        return {}
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(len(todo)) as pool:
        return dict(r for r in pool.map(work, todo) if r is not None)


def serve(daemon, only=None):
    """The daemon loop: asleep until the wake FIFO (an event, an install, a pass
    that ended) or the next full pass is due; a worker thread per repository
    with events; a full pass of each every SAFETY_PASS_S.  A repository whose
    pass failed (git gone, the store busy) is logged and tried again with a
    full pass after RETRY_S, doubling up to RETRY_MAX_S while it keeps failing.
    Which repositories it serves is read again on every wake-up, never on a
    timer."""
    import sys
    import threading
    conn = store.connect()
    workers, last_full = {}, {}
    busy = set()  # repositories whose worker has not finished (it says so before it pokes)
    retry = {}  # repository -> (when to try again, the delay after that)
    while not daemon.stopping.is_set():
        served = list(only) if only else repos.installed(conn)
        for repo in served:
            try:
                events.events_path(repo, create=True)
            except OrchError:
                pass  # something else is in its place: the pass reports it
        tick = time.monotonic()
        wake_at = tick + SAFETY_PASS_S
        for repo in served:
            key = repo.common_dir
            again, delay = retry.get(key, (None, RETRY_S))
            due_full = last_full.get(key, -SAFETY_PASS_S) + SAFETY_PASS_S
            if key in busy:
                continue  # its worker pokes the FIFO when it ends
            if again is not None and tick < again:
                wake_at = min(wake_at, again)
                continue
            full = again is not None or tick >= due_full
            if not (full or events.pending(repo)):
                wake_at = min(wake_at, due_full)
                continue
            if full:
                last_full[key] = tick

            def work(repo=repo, full=full, key=key, delay=delay):
                try:
                    process(repo, force=full, stopping=daemon.stopping)
                    retry.pop(key, None)
                except Exception as e:  # noqa: BLE001 - keep serving the other repositories
                    print(f"orch-sync: error: {failure_text(repo, e)}", file=sys.stderr,
                          flush=True)
                    retry[key] = (time.monotonic() + delay, min(delay * 2, RETRY_MAX_S))
                finally:
                    # Done first, then the poke: the loop it wakes must not find
                    # this thread still alive and go back to sleep for minutes.
                    busy.discard(key)
                    daemon.poke()  # events that came during the pass: look again
                    test_point("worker-done")  # the thread still runs, its work is done

            busy.add(key)
            workers[key] = threading.Thread(target=work, daemon=True)
            workers[key].start()
        daemon.sleep(wake_at - time.monotonic())
    for worker in workers.values():
        worker.join()
    conn.close()
