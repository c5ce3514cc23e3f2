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
- Text goes in as one paste, only into an empty input; Enter follows
  ORCH_ENTER_DELAY seconds later (more for a long note), because agents drop
  an Enter that arrives with the text.
- Confirm: after the Enter the panes are looked at again (see _confirm).
  `delivered` is only what the screen showed submitted; an unknown layout is
  `sent`.  A note left in the input gets one more Enter, then is
  `unsubmitted`: a failed attempt whose retry presses Enter, never retypes.
- Recover: a claim records that its note is being typed (tasks.typing), and
  a runner that claims an occurrence so marked looks first: the note in the
  input gets Enter only, the note above the input is `recovered`.  A claim
  on a pane whose lock was free is taken over at once (tasks.CLAIMABLE).
"""

import os
import sys
import time

# (limits and panes compile their many patterns when imported, and hashlib loads
# OpenSSL: they are imported where a pass first needs them, so that a pass with
# nothing to do -- `orch-sched run` from cron, most minutes -- never loads them.)
from . import clock, locks, paths, procs, store, tasks, tmux
from .errors import OrchError

MAX_SLEEP = 60.0  # bound a daemon's sleep: wall-clock jumps and suspend are not seen otherwise
CONFIRM_AT = (0.15, 0.35, 0.6, 1.0, 1.5, 2.0)  # looks after the Enter, in seconds from it
CONFIRM_AGAIN_S = 0.5  # a note still in the input this long after its Enter gets another
# An agent takes a long paste in for a while (and folds it) before an Enter counts:
# the Enter delay grows by 1 s per PASTE_BYTES_PER_S of the longest note, by at most 1.5 s.
PASTE_BYTES_PER_S = 20000
PASTE_EXTRA_MAX_S = 1.5
TRANSIENT_HOLD_S = 30.0  # an API rate-limit retry on screen: try again shortly


def enter_delay():
    return clock.parse_seconds(os.environ.get("ORCH_ENTER_DELAY") or "0.5",
                               "ORCH_ENTER_DELAY value", 0, 60)


def agent_commands():
    """ORCH_AGENT_COMMANDS as a set of command names (comma- or space-separated), or None."""
    names = (os.environ.get("ORCH_AGENT_COMMANDS") or "").replace(",", " ").split()
    return frozenset(names) or None


def pane_lock_name(server, pane_id):
    import hashlib
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
            now = clock.now()
            if not tasks.due_targets(self.conn, now) and not tasks.holds_ended(self.conn, now):
                return 0
            from . import limits
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
                claimed = tasks.claim(self.conn, server, targets, locked=True)
                if claimed is not None:
                    claims.append((pane, targets, *claimed))
            if not claims:
                return
            if not tmux.capture_all(server, [c[0] for c in claims]):
                claims = self._look_one_by_one(server, claims)
            notes, enter_only, readable = {}, [], set()
            for pane, _, task, _ in claims:
                how, seen = self._check(server, pane, task)
                if how == "type":
                    notes[pane.id] = task["note"]
                elif how == "enter":
                    enter_only.append(pane.id)
                if how and seen.layout is not None:
                    readable.add(pane.id)
            if notes:
                tasks.typing(self.conn, [c[2] for c in claims if c[0].id in notes])
            try:
                typed = tmux.paste_all(server, notes, self.spool) if notes else set()
            except OrchError as e:  # the spool cannot be written (a full disk): 74
                for _, _, task, _ in claims:  # back to the queue at once, untried
                    tasks.release(self.conn, task, str(e))
                raise
            if typed:
                longest = max(len(notes[p].encode()) for p in typed)
                time.sleep(self.delay + min(longest / PASTE_BYTES_PER_S, PASTE_EXTRA_MAX_S))
            pressed = [p for p in notes if p in typed] + enter_only
            missed = set(tmux.keys_all(server, pressed, "Enter"))
            sent = {}
            for pane, _, task, action in claims:
                if pane.id not in pressed and pane.id not in notes:
                    continue
                if pane.id not in pressed or pane.id in missed:
                    self.finish(task, "retry", f"can't find pane: {pane.id}", pane.id)
                else:
                    sent[pane.id] = (pane, task, action)
            for pane_id, (outcome, detail) in self._confirm(server, sent, readable).items():
                _, task, action = sent[pane_id]
                if action == "late" and outcome in tasks.DELIVERED:
                    late = f"late by {clock.fmt_duration(clock.now() - task['due'])} (caught up)"
                    detail = f"{late}; {detail}" if detail else late
                self.finish(task, outcome, detail, pane_id)
            panes = [(c[0], c[1]) for c in claims if c[0].id in sent]
            # A pane this pass is done with goes back to the other runners at once.
            self._release(server, keep={p.id for p, _ in panes})

    def _confirm(self, server, sent, readable):
        """Look at the panes just sent Enter until each note shows as submitted
        -> {pane id: (outcome, detail)}.

        Where the layout can be read, a note is delivered once it has left the
        input and the agent has moved on (busy, or the note shows above the
        input); still in the input CONFIRM_AGAIN_S after the Enter, it gets one
        more Enter; still there at the end, it is unsubmitted.  Elsewhere the
        keys were sent, which is all that can be said.  One tmux call a look,
        for every pane at once.
        """
        from . import panes
        results = {p: ("sent", None) for p in sent if p not in readable}
        watch = {p: sent[p] for p in sent if p in readable}
        held, again_done = {}, set()
        start = time.monotonic()
        for at in CONFIRM_AT:
            if not watch:
                break
            time.sleep(max(0.0, start + at - time.monotonic()))
            looked = [pane for pane, _, _ in watch.values()]
            if not tmux.capture_all(server, looked):
                for pane in looked:
                    try:
                        fresh = tmux.inspect(server, pane.id)
                        pane.screen, pane.cursor = fresh.screen, fresh.cursor
                    except tmux.Missing:
                        results[pane.id] = ("sent", "the pane went away after the Enter")
                        del watch[pane.id]
            again = []
            for pane_id, (pane, task, _) in list(watch.items()):
                seen = panes.classify(pane.screen or "", clock.now(), cursor=pane.cursor)
                # Busy first: aider and the REPLs leave a submitted line looking like an
                # input that holds it, and only their status (or cursor) says otherwise.
                held[pane_id] = seen.state != "busy" and panes.holds(seen, task["note"])
                if held[pane_id]:
                    if at >= CONFIRM_AGAIN_S and pane_id not in again_done:
                        again.append(pane_id)
                        again_done.add(pane_id)
                elif seen.state == "busy" or panes.submitted(pane.screen or "", seen,
                                                              task["note"]):
                    results[pane_id] = ("delivered", f"seen submitted: {seen.evidence}")
                    del watch[pane_id]
            if again:
                tmux.keys_all(server, again, "Enter")
        for pane_id in watch:
            if held.get(pane_id):
                results[pane_id] = ("unsubmitted", "the note is still in the input after a "
                                    "second Enter; the next attempt presses Enter only")
            else:
                results[pane_id] = ("sent", f"not seen submitted within {CONFIRM_AT[-1]:g} s")
        return results

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
        """How TASK goes into PANE now -> ("type" | "enter" | None, PaneState).

        "enter": a runner before this one typed the note and it still sits in
        the input (a crash, a lost Enter), so only Enter is pressed.  None: not
        now, and why is recorded.
        """
        from . import limits, panes
        problem = tasks.note_problem(task["note"])
        if problem:
            self.finish(task, "refused", problem, pane.id)
            return None, None
        seen = panes.classify(pane.screen or "", clock.now(),
                              procs.foreground(pane.pid, pane.command), self.allowed,
                              pane.cursor)
        if seen.state == "shell":
            self.finish(task, "retry", f"no agent running in {task['target']} "
                        f"({seen.evidence})", pane.id)
            return None, seen
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
            return None, seen
        if seen.state == "transient":
            tasks.hold(self.conn, task, clock.now() + TRANSIENT_HOLD_S,
                       f"transient rate limit on screen: {seen.limit.line}", pane.id)
            return None, seen
        if task["typed"] is not None and seen.layout is not None:
            # Typed before and not confirmed: the screen says what became of it.
            if seen.state == "draft" and panes.holds(seen, task["note"]):
                return "enter", seen
            if seen.state in ("ready", "busy") and panes.submitted(pane.screen or "", seen,
                                                                   task["note"]):
                self.finish(task, "recovered", "already submitted: it shows above the "
                            "input", pane.id)
                return None, seen
        if not seen.typable:
            tasks.defer(self.conn, task, seen.state, seen.describe(), pane.id)
            return None, seen
        return "type", seen

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
