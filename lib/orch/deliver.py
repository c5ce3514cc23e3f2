"""Typing check-ins into panes: one pass over everything due, and the daemon loop.

Rules:
- A pass starts one worker per due pane; workers run in parallel, so
  different panes are typed into at the same time.
- A worker holds its pane's lock (locks/pane.<server>.<id>) while it claims
  and types, so typing into one pane is serialised across every process, and
  p:0, p:0.0 and %3 are one pane.  A pane locked by another runner is left to it.
- A task is claimed only when its worker holds the pane and is about to type.
- Never into a bare shell: the note would run as a command.
- Never into a window that shows a usage-limit notice: its screen is captured
  just before typing; a limit suspends the task's account (limits.py) and the
  task is held, not counted as a failed attempt.  A rate-limit menu on screen
  gets one Escape (which dismisses it; Enter could pick "Upgrade your plan").
- Text goes in as one paste; Enter follows ORCH_ENTER_DELAY seconds later,
  because agents drop an Enter that arrives with the text.
"""

import hashlib
import os
import sys
import threading
import time

from . import clock, limits, locks, store, tasks, tmux
from .errors import DATAERR, OrchError

MAX_WORKERS = 128
MAX_SLEEP = 60.0  # bound a daemon's sleep: wall-clock jumps and suspend are not seen otherwise
TRANSIENT_HOLD_S = 30.0  # an API rate-limit retry on screen: try again shortly


def enter_delay():
    text = os.environ.get("ORCH_ENTER_DELAY") or "0.5"
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
    return Pass(stopping).run()


class Pass:
    """One pass: a worker thread per due pane, sharing one connection.

    Targets are resolved, and the panes' screens captured, with one tmux call
    each per server.  The pass takes each pane's lock without waiting: a pane
    whose lock another runner holds is that runner's to type into (it claims
    until nothing there is due), so this pass leaves it alone.  All names of
    one pane (p:0, p:0.0, %3) are served by one worker, earliest due first.
    The workers' transactions go through self.db one at a time: inside one
    process they never meet SQLite's busy handler, whose sleeps grow to 100 ms.
    """

    def __init__(self, stopping=None):
        self.delay = enter_delay()
        tmux.tmux_bin()
        self.stopping = stopping
        self.conn = store.connect(durable=False)
        self.db = threading.Lock()
        self.handled = 0
        self.errors = []

    def stopped(self):
        return self.stopping is not None and self.stopping.is_set()

    def run(self):
        held = []
        try:
            with self.db:
                limits.resume_due(self.conn, tmux.capture)
                due = tasks.due_targets(self.conn, clock.now())
            jobs = []
            for server in sorted({row["server"] for row in due}):
                found = tmux.resolve_all(server, [r["target"] for r in due
                                                  if r["server"] == server])
                by_pane = {}
                for target, pane in found.items():
                    if isinstance(pane, tmux.Missing):
                        jobs.append((self._missing, server, target, pane))
                    else:
                        by_pane.setdefault(pane.id, (pane, []))[1].append(target)
                mine = []
                for pane, targets in by_pane.values():
                    fd = locks.open_lock(pane_lock_name(server, pane.id))
                    if locks.acquire(fd, blocking=False):
                        held.append(fd)
                        mine.append(pane)
                        jobs.append((self._type, server, targets, pane))
                    else:
                        os.close(fd)
                tmux.capture_all(server, mine)
            threads = []
            sem = threading.BoundedSemaphore(MAX_WORKERS)
            for job in jobs:
                sem.acquire()
                t = threading.Thread(target=self._work, args=(sem, *job), daemon=True)
                t.start()
                threads.append(t)
            for t in threads:
                t.join()
            if self.errors:  # a worker could not go on (the database stayed busy, say)
                raise self.errors[0]
            return self.handled
        finally:
            for fd in held:
                os.close(fd)  # releases the pane's lock
            self.conn.close()

    def claim(self, server, targets):
        with self.db:
            return tasks.claim(self.conn, server, targets)

    def finish(self, task, result):
        outcome, detail, pane_id, seen = result
        with self.db:
            if outcome == "limited":
                with store.tx(self.conn):
                    until = limits.suspend(self.conn, task["account"], seen, task["server"],
                                           pane_id, task["target"])
                tasks.hold(self.conn, task, until, f"usage limit ({seen.kind}): {seen.line}; "
                           f"account {task['account']} suspended until {clock.iso(until)}",
                           pane_id)
            elif outcome == "transient":
                tasks.hold(self.conn, task, clock.now() + TRANSIENT_HOLD_S,
                           f"transient rate limit on screen: {seen.line}", pane_id)
            else:
                tasks.finish(self.conn, task, outcome, detail, pane_id)
            self.handled += 1

    def _work(self, sem, job, *args):
        try:
            job(*args)
        except Exception as e:  # noqa: BLE001 - reported by run(), in the main thread
            self.errors.append(e)
        finally:
            sem.release()

    def _missing(self, server, target, missing):
        # Nothing to type into: every due occurrence gets its attempt logged and backs off.
        while not self.stopped() and (claimed := self.claim(server, target)):
            self.finish(claimed[0], ("retry", str(missing), None, None))

    def _type(self, server, targets, pane):
        # PANE was resolved and captured just now; after typing, look again.
        fresh = True
        while not self.stopped() and (claimed := self.claim(server, targets)):
            task, action = claimed
            if not fresh:
                try:
                    pane = tmux.inspect(server, pane.id)
                except tmux.Missing as e:
                    self.finish(task, ("retry", str(e), pane.id, None))
                    continue
            fresh = False
            result = deliver_one(server, task["target"], task, self.delay, pane)
            if result[0] == "delivered" and action == "late":
                late = clock.fmt_duration(clock.now() - task["due"])
                result = ("delivered", f"late by {late} (caught up)", *result[2:])
            self.finish(task, result)


def deliver_one(server, target, task, delay, pane):
    """Type TASK's note into TARGET, resolved just now to PANE.

    Returns (outcome, detail, pane id, detection): outcome 'delivered',
    'retry' (a failed attempt), 'limited' or 'transient' (the screen says so).
    """
    if pane.is_shell:
        return ("retry", f"no agent running in {target} (the pane runs {pane.command})",
                pane.id, None)
    try:
        screen = pane.screen if pane.screen is not None else tmux.capture(server, pane.id)
        seen = limits.detect(screen, clock.now())
        if seen.state == "limited":
            if seen.menu:
                tmux.send_key(server, pane.id, "Escape")
            return "limited", None, pane.id, seen
        if seen.state == "transient":
            return "transient", None, pane.id, seen
        tmux.paste(server, pane.id, task["note"])
        time.sleep(delay)
        tmux.send_key(server, pane.id, "Enter")
    except tmux.Missing as e:
        return "retry", str(e), pane.id, None
    return "delivered", None, pane.id, None


def dry_run():
    """What a pass would do now, as (task, action) pairs, without doing it."""
    conn = store.connect()
    try:
        now = clock.now()
        return [(row, tasks.plan(row, now)) for row in tasks.claimable(conn, now)]
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
            print(f"orch-sched: error: {e}", file=sys.stderr, flush=True)
            nxt = clock.now() + 5
        except Exception as e:  # noqa: BLE001 - a daemon left running must not die of a bug
            print(f"orch-sched: internal error: {type(e).__name__}: {e}", file=sys.stderr,
                  flush=True)
            nxt = clock.now() + 5
        timeout = MAX_SLEEP if nxt is None else min(max(nxt - clock.now(), 0), MAX_SLEEP)
        daemon.sleep(timeout)
    conn.close()
