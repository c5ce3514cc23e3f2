"""Typing check-ins into panes: one pass over everything due, and the daemon loop.

Rules:
- A pass types into every due pane at once, one check-in per pane a round
  (see Pass): different panes in parallel, one pane one note at a time.
- A pass holds each pane's lock (locks/pane.<server>.<id>) while it claims
  and types there, so typing into one pane is serialised across every
  process, and p:0, p:0.0 and %3 are one pane.  The server is its socket's
  real path: /tmp/x and a symlink to it are one server, one lock.  A pane
  locked by another runner is left to it.
- A task is claimed only when its pane is held and it is about to be typed.
- Look before typing: the pane's screen and foreground program are classified
  (panes.py, procs.py) just before typing, and only a ready pane, or one whose
  program orch has no layout for, is typed into.  A shell gets nothing (the
  note would run as a command): a failed attempt.  A dialog, a busy agent or
  a draft in the input defers the check-in: no key at all, no attempt
  counted, looked at again in a few seconds; a one-shot pass does not wait.
- A usage-limit notice suspends the task's account (limits.py) and the task
  is held, not counted as a failed attempt.  A rate-limit menu on screen gets
  one Escape (which dismisses it; Enter could pick "Upgrade your plan"): the
  only key ever sent to anything but an input line.
- A stored note holding a control character (from an older database) fails
  at once and is never typed.
- Text goes in as one paste; Enter follows ORCH_ENTER_DELAY seconds later,
  because agents drop an Enter that arrives with the text.
"""

import hashlib
import os
import sys
import time

from . import clock, limits, locks, panes, paths, procs, store, tasks, tmux
from .errors import OrchError

MAX_SLEEP = 60.0  # bound a daemon's sleep: wall-clock jumps and suspend are not seen otherwise
TRANSIENT_HOLD_S = 30.0  # an API rate-limit retry on screen: try again shortly


def enter_delay():
    return clock.parse_seconds(os.environ.get("ORCH_ENTER_DELAY") or "0.5",
                               "ORCH_ENTER_DELAY value", 0, 60)


def agent_commands():
    """ORCH_AGENT_COMMANDS as a set of command names (comma- or space-separated), or None."""
    names = (os.environ.get("ORCH_AGENT_COMMANDS") or "").replace(",", " ").split()
    return frozenset(names) or None


def pane_lock_name(server, pane_id):
    digest = hashlib.sha1(os.path.realpath(server).encode()).hexdigest()[:12]
    return f"pane.{digest}.{pane_id.lstrip('%')}"


def run_pass(stopping=None):
    """Deliver everything due now; return the number of tasks handled."""
    return Pass(stopping).run()


class Pass:
    """One pass, in rounds: each round types one check-in into every due pane.

    Targets are resolved with one tmux call per server, and all names of one
    pane (p:0, p:0.0, %3) are served together, earliest due first.  The pass
    takes each pane's lock without waiting: a pane whose lock another runner
    holds is that runner's to type into (it claims until nothing there is
    due), so this pass leaves it alone.  A round claims the next occurrence of
    each pane, looks at every pane (command and screen) with one tmux call,
    types every note that may go with one more, waits the Enter delay once,
    and presses Enter everywhere with a third: three tmux calls a round,
    however many panes.
    """

    def __init__(self, stopping=None):
        self.delay = enter_delay()
        tmux.tmux_bin()
        self.stopping = stopping
        self.conn = store.connect(durable=False)
        self.spool = paths.sub("spool", create_dir=True)
        self.allowed = agent_commands()
        self.handled = 0

    def stopped(self):
        return self.stopping is not None and self.stopping.is_set()

    def run(self):
        self.held = {}  # pane lock fds, by (server, pane id)
        try:
            limits.resume_due(self.conn, tmux.capture)
            due = tasks.due_targets(self.conn, clock.now())
            for server in sorted({row["server"] for row in due}):
                found = tmux.resolve_all(server, [r["target"] for r in due
                                                  if r["server"] == server])
                panes = {}
                for target, pane in found.items():
                    if isinstance(pane, tmux.Missing):
                        self._missing(server, target, pane)
                    else:
                        panes.setdefault(pane.id, (pane, []))[1].append(target)
                mine = []
                for pane, targets in panes.values():
                    fd = locks.open_lock(pane_lock_name(server, pane.id))
                    if locks.acquire(fd, blocking=False):
                        self.held[server, pane.id] = fd
                        mine.append((pane, targets))
                    else:
                        os.close(fd)
                self._rounds(server, mine)
                self._release(server)
            return self.handled
        finally:
            for fd in self.held.values():
                os.close(fd)  # releases the pane's lock
            self.conn.close()

    def _missing(self, server, target, missing):
        # Nothing to type into: every due occurrence gets its attempt logged and backs off.
        while not self.stopped() and (claimed := tasks.claim(self.conn, server, target)):
            self.finish(claimed[0], "retry", str(missing), None)

    def _rounds(self, server, panes):
        while panes and not self.stopped():
            claims = []
            for pane, targets in panes:
                claimed = tasks.claim(self.conn, server, targets)
                if claimed is not None:
                    claims.append((pane, targets, *claimed))
            if not claims:
                return
            if not tmux.capture_all(server, [c[0] for c in claims]):
                claims = self._look_one_by_one(server, claims)
            notes = {}
            for pane, _, task, _ in claims:
                ready = self._check(server, pane, task)
                if ready:
                    notes[pane.id] = task["note"]
            typed = tmux.paste_all(server, notes, self.spool) if notes else set()
            if typed:
                time.sleep(self.delay)
            missed = set(tmux.keys_all(server, [p for p in notes if p in typed], "Enter"))
            for pane, _, task, action in claims:
                if pane.id not in notes:
                    continue
                if pane.id not in typed or pane.id in missed:
                    self.finish(task, "retry", f"can't find pane: {pane.id}", pane.id)
                elif action == "late":
                    late = clock.fmt_duration(clock.now() - task["due"])
                    self.finish(task, "delivered", f"late by {late} (caught up)", pane.id)
                else:
                    self.finish(task, "delivered", None, pane.id)
            panes = [(c[0], c[1]) for c in claims if c[0].id in typed and c[0].id not in missed]
            # A pane this pass is done with goes back to the other runners at once.
            self._release(server, keep={p.id for p, _ in panes})

    def _release(self, server, keep=()):
        for key in [k for k in self.held if k[0] == server and k[1] not in keep]:
            os.close(self.held.pop(key))

    def _look_one_by_one(self, server, claims):
        """A pane went away since the round began: look at each, retrying the gone ones."""
        kept = []
        for pane, targets, task, action in claims:
            try:
                kept.append((tmux.inspect(server, pane.id), targets, task, action))
            except tmux.Missing as e:
                self.finish(task, "retry", str(e), pane.id)
        return kept

    def _check(self, server, pane, task):
        """True if TASK may be typed into PANE now; else record why not."""
        problem = tasks.note_problem(task["note"])
        if problem:
            self.finish(task, "refused", problem, pane.id)
            return False
        seen = panes.classify(pane.screen or "", clock.now(),
                              procs.foreground(pane.pid, pane.command), self.allowed,
                              pane.cursor)
        if seen.state == "shell":
            self.finish(task, "retry", f"no agent running in {task['target']} "
                        f"({seen.evidence})", pane.id)
            return False
        if seen.state == "limited":
            limit = seen.limit
            if limit.menu:
                try:
                    tmux.send_key(server, pane.id, "Escape")
                except tmux.Missing:
                    pass
            with store.tx(self.conn):
                until = limits.suspend(self.conn, task["account"], limit, server, pane.id,
                                       task["target"])
            reset = "" if limit.reset is not None else ", no reset time shown"
            tasks.hold(self.conn, task, until, f"usage limit ({limit.kind}{reset}): "
                       f"{limit.line}; account {task['account']} suspended until "
                       f"{clock.iso(until)}", pane.id)
            return False
        if seen.state == "transient":
            tasks.hold(self.conn, task, clock.now() + TRANSIENT_HOLD_S,
                       f"transient rate limit on screen: {seen.limit.line}", pane.id)
            return False
        if not seen.typable:
            tasks.defer(self.conn, task, seen.state, seen.describe(), pane.id)
            return False
        return True

    def finish(self, task, outcome, detail, pane_id):
        tasks.finish(self.conn, task, outcome, detail, pane_id)
        self.handled += 1


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
