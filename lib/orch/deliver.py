"""Typing check-ins into panes: one pass over everything due, and the daemon loop.

Rules:
- A pass starts one worker per due (server, target); workers run in
  parallel, so different panes are typed into at the same time.
- A worker resolves its target to a pane id and holds that pane's lock
  (locks/pane.<server>.<id>) while it claims and types, so typing into one
  pane is serialised across every process, and p:0, p:0.0 and %3 are one pane.
- A task is claimed only when its worker holds the pane and is about to type.
- Never into a bare shell: the note would run as a command.
- Text goes in as one paste; Enter follows ORCH_ENTER_DELAY seconds later,
  because agents drop an Enter that arrives with the text.
"""

import hashlib
import os
import sys
import threading
import time

from . import clock, locks, store, tasks, tmux
from .errors import DATAERR, OrchError

MAX_WORKERS = 128
DAEMON_LOCK = "orch-sched.daemon"
MAX_SLEEP = 60.0  # bound a daemon's sleep: wall-clock jumps and suspend are not seen otherwise


def enter_delay():
    text = os.environ.get("ORCH_ENTER_DELAY", "0.5")
    try:
        value = float(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 60:
        raise OrchError(f"ORCH_ENTER_DELAY: bad value {text!r} (want seconds, 0-60)", DATAERR)
    return value


def pane_lock_name(server, pane_id):
    digest = hashlib.sha1(server.encode()).hexdigest()[:12]
    return f"pane.{digest}.{pane_id.lstrip('%')}"


def run_pass(stopping=None):
    """Deliver everything due now; return the number of tasks handled."""
    delay = enter_delay()
    tmux.tmux_bin()
    conn = store.connect()
    try:
        due = tasks.due_targets(conn, clock.now())
    finally:
        conn.close()
    counts = []
    sem = threading.BoundedSemaphore(MAX_WORKERS)

    def work(server, target):
        try:
            counts.append(_work_target(server, target, delay, stopping))
        finally:
            sem.release()

    threads = []
    for row in due:
        sem.acquire()
        t = threading.Thread(target=work, args=(row["server"], row["target"]), daemon=True)
        t.start()
        threads.append(t)
    for t in threads:
        t.join()
    return sum(counts)


def _work_target(server, target, delay, stopping):
    conn = store.connect()
    handled = 0
    try:
        try:
            pane = tmux.resolve(server, target)
        except tmux.Missing as e:
            # Nothing to type into: every due occurrence gets its attempt logged and backs off.
            while not (stopping and stopping.is_set()):
                claimed = tasks.claim(conn, server, target)
                if claimed is None:
                    break
                tasks.finish(conn, claimed[0], "retry", str(e))
                handled += 1
            return handled
        with locks.held(pane_lock_name(server, pane.id)):
            while not (stopping and stopping.is_set()):
                claimed = tasks.claim(conn, server, target)
                if claimed is None:
                    break
                task, action = claimed
                outcome, detail, pane_id = deliver_one(server, target, task, delay)
                if outcome == "delivered" and action == "late":
                    detail = f"late by {clock.fmt_duration(clock.now() - task['due'])} (caught up)"
                tasks.finish(conn, task, outcome, detail, pane_id)
                handled += 1
        return handled
    finally:
        conn.close()


def deliver_one(server, target, task, delay):
    """Type TASK's note into TARGET; return (outcome, detail, pane id)."""
    try:
        pane = tmux.resolve(server, target)  # again, under the lock: the pane may have changed
    except tmux.Missing as e:
        return "retry", str(e), None
    if pane.is_shell:
        return "retry", f"no agent running in {target} (the pane runs {pane.command})", pane.id
    try:
        tmux.paste(server, pane.id, task["note"])
        time.sleep(delay)
        tmux.send_enter(server, pane.id)
    except tmux.Missing as e:
        return "retry", str(e), pane.id
    return "delivered", None, pane.id


def dry_run():
    """What a pass would do now, as (task, action) pairs, without doing it."""
    conn = store.connect()
    try:
        now = clock.now()
        rows = conn.execute(
            "SELECT * FROM tasks WHERE (status = 'pending' AND not_before <= :now) OR "
            "(status = 'running' AND lease_until <= :now) ORDER BY not_before, id",
            {"now": now}).fetchall()
        return [(row, tasks.plan(row, now)) for row in rows]
    finally:
        conn.close()


def daemon_loop(daemon):
    """Passes until told to stop, sleeping until the next thing to do."""
    conn = store.connect()
    last_prune = 0.0
    while not daemon.stopping.is_set():
        try:
            run_pass(daemon.stopping)
            store.set_meta(conn, "daemon.last_pass", clock.now())
            if time.time() - last_prune > 86400:
                tasks.prune(conn, 30 * 86400)
                last_prune = time.time()
            nxt = tasks.next_wakeup(conn)
        except OrchError as e:  # a busy database, say: report and try again shortly
            print(f"orch-sched daemon: {e}", file=sys.stderr, flush=True)
            nxt = clock.now() + 5
        timeout = MAX_SLEEP if nxt is None else min(max(nxt - clock.now(), 0), MAX_SLEEP)
        daemon.sleep(timeout)
    conn.close()
