"""Typing check-ins into panes: one pass over everything due, and the daemon loop.

Rules:
- A pass types into every due pane at once, each pane at its own pace (see
  Pass): different panes in parallel, one pane one note at a time, a slow
  pane holding up no other.
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
BUSY_RETRY_S = 1.0  # a daemon pass that found due work it could not take waits this long
CONFIRM_AT = (0.15, 0.35, 0.6, 1.0, 1.5, 2.0)  # looks after the Enter, in seconds from it
CONFIRM_AGAIN_S = 0.5  # a note still in the input this long after its Enter gets another
LOOK_SLACK_S = 0.02  # looks due this close together are taken with one tmux call
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
    """One pass: every due pane served at once, each at its own pace.

    Targets are resolved with one tmux call per server, and all names of one
    pane (p:0, p:0.0, %3) are served together, earliest due first.  The pass
    takes each pane's lock without waiting: a pane whose lock another runner
    holds is that runner's to type into (it claims until nothing there is
    due), so this pass leaves it alone.  Each pane goes through the same steps
    -- claim its next occurrence, look (command and screen), type, Enter after
    the delay, look until submitted -- and moves to its next occurrence as soon
    as its note is settled, never waiting for a slower pane.  The panes whose
    step falls due at the same moment take it together, with one tmux call
    (and one transaction) however many they are: a look, a paste, an Enter.
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
            due = tasks.due_targets(self.conn, now)
            if tasks.holds_ended(self.conn, now):  # (only then are the limit rules loaded)
                from . import limits
                limits.resume_due(self.conn, tmux.capture)
                due = tasks.due_targets(self.conn, clock.now())  # with the resumes
            if not due:
                return 0
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
        """Serve PANES [(pane, its names)], each at its own pace, until none has
        anything due: claim, look, type; Enter after the delay; look until the
        note shows submitted; then that pane's next.  The panes whose step falls
        due together share its tmux call and its transaction."""
        ready = [_Work(pane, targets) for pane, targets in panes]
        typed, watched, results = [], [], []
        failure = None
        while True:
            if results:
                tasks.finish_each(self.conn, results)  # before those panes claim again
                self.handled += len(results)
                results = []
            if ready and (failure or self.stopped()):
                for w in ready:
                    self._drop(server, w)
            elif ready:
                failure = self._type(server, ready, typed, results)
            ready = []
            if not (typed or watched or results):
                break
            if not results:
                times = [w.enter_at for w in typed] + [w.look_at() for w in watched]
                time.sleep(max(0.0, min(times) - time.monotonic()))
            now = time.monotonic()
            if due := [w for w in typed if w.enter_at <= now]:
                typed = [w for w in typed if w.enter_at > now]
                self._enter(server, due, watched, ready, results)
            now = time.monotonic() + LOOK_SLACK_S
            if due := [w for w in watched if w.look_at() <= now]:
                watched = [w for w in watched if w.look_at() > now]
                self._confirm(server, due, watched, ready, results)
        if failure:
            raise failure

    def _type(self, server, ready, typed, results):
        """Claim the next occurrence of each READY pane, look at them, and type
        every note that may go (into TYPED); a pane with nothing to type now is
        let go.  Returns the error that stops the pass (a full spool), or None."""
        got = tasks.claim_each(self.conn, server, [w.targets for w in ready], locked=True)
        claimed = []
        for w, claim in zip(ready, got, strict=True):
            if claim is None:
                self._drop(server, w)  # done here: the pane goes back to the other runners
            else:
                w.task, w.action = claim
                claimed.append(w)
        if claimed and not tmux.capture_all(server, [w.pane for w in claimed]):
            claimed = self._look_one_by_one(server, claimed)
        notes, go = {}, []
        for w in claimed:
            how, seen = self._check(server, w.pane, w.task)
            if how is None:
                self._drop(server, w)
                continue
            w.readable = seen.layout is not None
            if how == "type":
                notes[w.pane.id] = w.task["note"]
            go.append(w)
        if notes:
            tasks.typing(self.conn, [w.task for w in go if w.pane.id in notes])
        try:
            pasted = tmux.paste_all(server, notes, self.spool) if notes else set()
        except OrchError as e:  # the spool cannot be written (a full disk): 74
            for w in [w for w in go if w.pane.id in notes]:  # back to the queue, untried
                tasks.release(self.conn, w.task, str(e))
                self._drop(server, w)
            go = [w for w in go if w.pane.id not in notes]  # Enter only: no spool needed
            failure, notes, pasted = e, {}, set()
        else:
            failure = None
        now = time.monotonic()
        for w in go:
            note = notes.get(w.pane.id)
            if note is None:  # the note sits in the input already: Enter only, now
                w.enter_at = now
            elif w.pane.id in pasted:
                w.enter_at = now + self.delay + min(len(note.encode()) / PASTE_BYTES_PER_S,
                                                    PASTE_EXTRA_MAX_S)
            else:
                results.append((w.task, "retry", f"can't find pane: {w.pane.id}", w.pane.id))
                self._drop(server, w)
                continue
            typed.append(w)
        return failure

    def _enter(self, server, due, watched, ready, results):
        """Press Enter in each pane of DUE: a readable one is then watched, any
        other's note was sent, which is all that can be said, and it goes on."""
        missed = set(tmux.keys_all(server, [w.pane.id for w in due], "Enter"))
        now = time.monotonic()
        for w in due:
            if w.pane.id in missed:
                results.append((w.task, "retry", f"can't find pane: {w.pane.id}", w.pane.id))
                self._drop(server, w)
            elif w.readable:
                w.entered, w.looks, w.again, w.in_input = now, 0, False, False
                watched.append(w)
            else:
                results.append(w.outcome("sent", None))
                ready.append(w)

    def _confirm(self, server, due, watched, ready, results):
        """Look at the panes of DUE, Enter pressed, whose look has come: a note
        is delivered once it has left the input and the agent has moved on
        (busy, or the note shows above the input); still in the input
        CONFIRM_AGAIN_S after the Enter, it gets one more Enter; still there
        after the last look (CONFIRM_AT), it is unsubmitted.  One tmux call for
        all of them; those not settled stay WATCHED."""
        from . import panes
        if not tmux.capture_all(server, [w.pane for w in due]):
            for w in list(due):
                try:
                    fresh = tmux.inspect(server, w.pane.id)
                    w.pane.screen, w.pane.cursor = fresh.screen, fresh.cursor
                except tmux.Missing:
                    results.append(w.outcome("sent", "the pane went away after the Enter"))
                    self._drop(server, w)
                    due.remove(w)
        again = []
        for w in due:
            at = CONFIRM_AT[w.looks]
            w.looks += 1
            seen = panes.classify(w.pane.screen or "", clock.now(), cursor=w.pane.cursor)
            # Busy first: aider and the REPLs leave a submitted line looking like an
            # input that holds it, and only their status (or cursor) says otherwise.
            w.in_input = seen.state != "busy" and panes.holds(seen, w.task["note"])
            if w.in_input:
                if at >= CONFIRM_AGAIN_S and not w.again:
                    again.append(w.pane.id)
                    w.again = True
            elif seen.state == "busy" or panes.submitted(w.pane.screen or "", seen,
                                                          w.task["note"]):
                results.append(w.outcome("delivered", f"seen submitted: {seen.evidence}"))
                ready.append(w)
                continue
            if w.looks < len(CONFIRM_AT):
                watched.append(w)
            elif w.in_input:
                results.append(w.outcome("unsubmitted", "the note is still in the input "
                                         "after a second Enter; the next attempt presses "
                                         "Enter only"))
                ready.append(w)
            else:
                results.append(w.outcome("sent", f"not seen submitted within "
                                         f"{CONFIRM_AT[-1]:g} s"))
                ready.append(w)
        if again:
            tmux.keys_all(server, again, "Enter")

    def _release(self, server):
        for key in [k for k in self.held if k[0] == server]:
            os.close(self.held.pop(key))

    def _drop(self, server, w):
        """This pass is done with W's pane: its lock goes back to the other runners."""
        fd = self.held.pop((server, w.pane.id), None)
        if fd is not None:
            os.close(fd)

    def _look_one_by_one(self, server, claimed):
        """A pane went away since the last look: look at each, retrying the gone ones."""
        kept = []
        for w in claimed:
            try:
                w.pane = tmux.inspect(server, w.pane.id)
                kept.append(w)
            except tmux.Missing as e:
                self.finish(w.task, "retry", str(e), w.pane.id)
                self._drop(server, w)
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


class _Work:
    """One pane of a pass: its claimed task and where its note stands."""

    __slots__ = ("pane", "targets", "task", "action", "readable", "enter_at", "entered",
                 "looks", "again", "in_input")

    def __init__(self, pane, targets):
        self.pane, self.targets = pane, targets

    def look_at(self):
        return self.entered + CONFIRM_AT[self.looks]

    def outcome(self, outcome, detail):
        """(task, outcome, detail, pane id) for tasks.finish_each."""
        if self.action == "late" and outcome in tasks.DELIVERED:
            late = f"late by {clock.fmt_duration(clock.now() - self.task['due'])} (caught up)"
            detail = f"{late}; {detail}" if detail else late
        return self.task, outcome, detail, self.pane.id


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
            handled = run_pass(daemon.stopping)
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
        else:
            if not handled and nxt is not None and nxt <= clock.now():
                # Due but not ours now: another runner holds the pane, or it waits
                # behind a note put back (tasks.claim).  Look again shortly, not at once.
                nxt = clock.now() + BUSY_RETRY_S
        timeout = MAX_SLEEP if nxt is None else min(max(nxt - clock.now(), 0), MAX_SLEEP)
        daemon.sleep(timeout)
    conn.close()
