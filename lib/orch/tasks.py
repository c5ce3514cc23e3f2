"""The check-in model: add, claim, finish, list (used by orch-sched, orch-sync, orch-dash).

Rules:
- status says what state a task is in: pending (waiting for not_before),
  running (claimed by one runner until lease_until), done, failed (gave up,
  reason says why), cancelled, missed (skipped by its catch-up policy).
  No state is encoded in a due time or a count.
- due is the occurrence the schedule asks for; not_before is when the next
  attempt may start (due, or later after a failure); a recurring task's next
  occurrence is due + k * every_s, the first one after now: anchored to the
  schedule, never to when a delivery happened, and never a burst of past ones.
- A runner claims one occurrence at a time, in one BEGIN IMMEDIATE
  transaction, just before typing it, with a lease of LEASE_S seconds.  Every
  later write for that claim checks status='running' and the same
  lease_until, so a runner whose lease expired (and was re-claimed) or whose
  task was cancelled meanwhile changes nothing.
- Every attempt, whatever its outcome, is a row in attempts.
"""

import os
import re

from . import clock, paths, store
from .errors import DATAERR, TEMPFAIL, OrchError

LIVE = ("pending", "running")
# Outcomes of an attempt whose keys were sent: confirmed on screen, sent without
# a way to confirm (unknown layout), found already submitted after a crash.
DELIVERED = ("delivered", "sent", "recovered")
FINISHED = ("done", "failed", "cancelled", "missed")
STATUSES = LIVE + FINISHED
LEASE_S = 60.0
MIN_EVERY_S = 1.0
RETRY_BASE_S = 30.0
RETRY_CAP_S = 900.0
DEFER_MIN_S = 2.0  # a pane showing a dialog, a busy agent or a draft is looked at again
DEFER_MAX_S = 15.0  # in 2 s, backing off to 15 s as the wait grows
MAX_NOTE = 1 << 20
WAKE_FIFO = "wake"
DAEMON_LOCK = "orch-sched.daemon"  # held by the one orch-sched daemon (locks.py)

# An occurrence a runner may claim at :now -- due, or claimed by a runner that
# is gone: its lease expired, or (:locked, for a runner holding the pane's lock)
# at once, because only the holder of a pane's lock claims and types there, so
# a claim still running on a free pane belongs to a runner that died -- and its
# account not suspended for a usage limit (see limits.py).
PENDING_DUE = "status = 'pending' AND not_before <= :now"
RUNNING_STALE = "status = 'running' AND (lease_until <= :now OR :locked)"
NOT_HELD = """NOT EXISTS (SELECT 1 FROM accounts a WHERE a.name = tasks.account
    AND a.state = 'suspended' AND a.until > :now)"""
CLAIMABLE = f"(({PENDING_DUE}) OR ({RUNNING_STALE})) AND {NOT_HELD}"
# Each task with the latest suspension of its account (held_since..held_until).
WITH_HOLD = """SELECT tasks.*, a.since AS held_since, a.until AS held_until
    FROM tasks LEFT JOIN accounts a ON a.name = tasks.account"""

COLUMNS = ("id", "target", "server", "note", "due", "every_s", "key", "account", "status",
           "attempts", "not_before", "lease_until", "reason", "created", "updated",
           "catch_up", "grace_s", "retries", "picked", "deferred", "deferred_since", "typed")


def check_note(note):
    """NOTE if it may be stored and typed; else raise OrchError (exit 65)."""
    if not note.strip():
        raise OrchError("the note is empty", DATAERR)
    if len(note.encode("utf-8", "surrogatepass")) > MAX_NOTE:
        raise OrchError(f"the note is longer than {MAX_NOTE} bytes", DATAERR)
    try:
        note.encode("utf-8")
    except UnicodeEncodeError:
        raise OrchError("the note is not valid UTF-8", DATAERR) from None
    problem = note_problem(note)
    if problem:
        raise OrchError(problem, DATAERR)
    return note


# Notes are text: a control character typed into a pane is a key (ESC starts
# a sequence that can end the paste early or press Shift-Tab), never text.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_CONTROL_NAMES = {0: "NUL", 7: "BEL", 8: "BS", 0x0b: "VT", 0x0c: "FF", 0x0d: "CR", 0x1b: "ESC",
                  0x7f: "DEL", 0x9b: "CSI"}


def note_problem(note):
    """Why NOTE may not be typed (a control character other than newline and
    tab), or None."""
    m = _CONTROL.search(note)
    if m is None:
        return None
    code = ord(m.group())
    name = _CONTROL_NAMES.get(code)
    name = f"{name} (U+{code:04X})" if name else f"U+{code:04X}"
    return (f"the note holds a control character, {name}, at character {m.start() + 1} "
            "(only newline and tab are allowed)")


def check_label(text, what):
    """Keys and account names: one line of printable text, bounded."""
    if not text or len(text) > 200 or any(ord(c) < 32 or c == "\x7f" for c in text):
        raise OrchError(f"bad {what}: {text!r} (1-200 printable characters)", DATAERR)
    return text


def add(conn, target, server, note, due, every_s=None, key=None, account="default",
        catch_up="once", grace_s=600.0, retries=5):
    """Store a check-in (or update the live one with the same KEY); return its id."""
    fields = _fields(target, server, note, due, every_s, key, account, catch_up, grace_s,
                     retries, clock.now())
    with store.tx(conn):
        task_id = _store(conn, fields)
    wake()
    return task_id


ITEM_KEYS = {"target", "note", "in", "at", "every", "key", "account", "catch_up", "grace",
             "retries"}


def item(obj, server, now, account, check=False):
    """A check-in given as a mapping (a line of `add --batch`, a team file's
    [[checkin]]) as add_many's item: the same checks as add's options (CHECK:
    and those add_many makes when it stores it, now)."""
    from . import tmux
    unknown = set(obj) - ITEM_KEYS
    if unknown:
        raise OrchError(f"unknown key {sorted(unknown)[0]!r} "
                        f"(want {', '.join(sorted(ITEM_KEYS))})")
    for name in ("target", "note"):
        if not isinstance(obj.get(name), str):
            raise OrchError(f"{name} must be a string")
    if "in" in obj and "at" in obj:
        raise OrchError("give in or at, not both")

    def text_of(name):
        value = obj[name]
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise OrchError(f"{name} must be a string or a number")
        return str(value)

    if "at" in obj:
        due = clock.parse_time(text_of("at"), now, "at time")
    else:
        due = now + clock.parse_duration(text_of("in") if "in" in obj else "0", "in duration")
    every = clock.parse_duration(text_of("every"), "every duration") if "every" in obj else None
    grace = clock.parse_duration(text_of("grace"), "grace duration") if "grace" in obj else 600.0
    retries = text_of("retries") if "retries" in obj else "5"
    if not (retries.isascii() and retries.isdigit()) or int(retries) > 100:
        raise OrchError(f"bad retries count: {retries!r} (want a whole number from 0 to 100)")
    for name in ("key", "account", "catch_up"):
        if name in obj and not isinstance(obj[name], str):
            raise OrchError(f"{name} must be a string")
    found = dict(target=tmux.check_target(obj["target"]), server=server,
                 note=check_note(obj["note"]), due=due, every_s=every, key=obj.get("key"),
                 account=obj.get("account", account), catch_up=obj.get("catch_up", "once"),
                 grace_s=grace, retries=int(retries))
    if check:
        _fields(now=now, **found)
    return found


def add_many(conn, items):
    """Store many check-ins (ITEMS: dicts of add's arguments) in one transaction: all
    or none.  Returns their ids; an invalid item raises OrchError with .index set
    to its position, before anything is stored."""
    now = clock.now()
    checked = []
    for i, item in enumerate(items):
        try:
            checked.append(_fields(now=now, **item))
        except OrchError as e:
            e.index = i
            raise
    ids = []
    with store.tx(conn):
        for i, fields in enumerate(checked):
            try:
                ids.append(_store(conn, fields))
            except OrchError as e:  # its key is being delivered: the transaction rolls back
                e.index = i
                raise
    wake()
    return ids


def _fields(target, server, note, due, every_s=None, key=None, account="default",
            catch_up="once", grace_s=600.0, retries=5, now=None):
    """A check-in's columns, every value checked as add documents it."""
    check_note(note)
    if key is not None:
        check_label(key, "key")
    check_label(account, "account")
    if every_s is not None and every_s < MIN_EVERY_S:
        raise OrchError(f"the repeat interval must be at least {MIN_EVERY_S:g} s", DATAERR)
    if not clock.MIN_INSTANT <= due <= clock.MAX_INSTANT:
        raise OrchError("the due time is out of range (years 2000 to 9999)", DATAERR)
    if catch_up not in ("once", "skip"):
        raise OrchError(f"bad catch-up policy: {catch_up!r} (want once or skip)", DATAERR)
    return dict(target=target, server=server, note=note, due=due, every_s=every_s,
                account=account, catch_up=catch_up, grace_s=grace_s, retries=retries,
                not_before=due, updated=now, key=key)


def _store(conn, fields):
    """Insert FIELDS, or update the live check-in with their key (inside a transaction)."""
    key = fields["key"]
    row = None
    if key is not None:
        row = conn.execute("SELECT id, status FROM tasks WHERE key = ? AND status IN "
                           "('pending', 'running')", (key,)).fetchone()
    if row is None:
        names = ", ".join(fields)
        values = ", ".join(f":{k}" for k in fields)
        return conn.execute(f"INSERT INTO tasks ({names}, created) VALUES ({values}, :updated)",
                            fields).lastrowid
    if row["status"] == "running":
        raise OrchError(f"task {row['id']} with key {key!r} is being delivered right now; "
                        "try again", TEMPFAIL)
    sets = ", ".join(f"{k} = :{k}" for k in fields if k != "key")
    conn.execute(f"UPDATE tasks SET {sets}, attempts = 0, picked = 0, reason = NULL, "
                 "deferred = NULL, deferred_since = NULL, typed = NULL WHERE id = :id",
                 dict(fields, id=row["id"]))
    return row["id"]


def get(conn, task_id):
    return conn.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()


def listing(conn, statuses=LIVE):
    """The tasks in STATUSES by (not_before, id), as a cursor: read as they are used."""
    marks = ", ".join("?" * len(statuses))
    return conn.execute(f"SELECT * FROM tasks WHERE status IN ({marks}) ORDER BY not_before, id",
                        statuses)


def porcelain_listing(conn, statuses=LIVE):
    """Like listing(), as plain tuples of the porcelain columns, formatted by
    SQLite (the hot path of scripts and status lines): id, status, due (ISO
    8601 UTC), target, every (whole seconds or None), attempts, account, key,
    note."""
    marks = ", ".join("?" * len(statuses))
    cur = conn.cursor()
    cur.row_factory = None
    return cur.execute(
        "SELECT id, status, strftime('%Y-%m-%dT%H:%M:%SZ', due, 'unixepoch'), target, "
        f"CAST(every_s AS INTEGER), attempts, account, key, note FROM tasks "
        f"WHERE status IN ({marks}) ORDER BY not_before, id", statuses)


def next_per_target(conn):
    """The next live check-in (by not_before) of every (server, target) that has
    one, ordered by target and server, each as (task, number of live check-ins
    there): one pass over the target index, however many targets.  (SQLite
    takes a bare column of a MIN() aggregate from the row holding the minimum.)"""
    marks = ", ".join("?" * len(LIVE))
    rows = conn.execute(
        "SELECT *, MIN(not_before) AS first, COUNT(*) AS live FROM tasks INDEXED BY "
        f"tasks_target WHERE status IN ({marks}) GROUP BY target, server "
        "ORDER BY target, server", LIVE).fetchall()
    return [(row, row["live"]) for row in rows]


def keyed(conn, prefix):
    """The ids of the live check-ins whose key starts with PREFIX (a range of the
    key index)."""
    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    return [r[0] for r in conn.execute("SELECT id FROM tasks WHERE key >= ? AND key < ? AND "
                                       "status IN ('pending', 'running')", (prefix, end))]


def live_per_target(conn):
    """How many live check-ins each (target, server) has: [(target, server, n)],
    from the counts the triggers of migration 9 keep (the status line's count)."""
    return conn.execute("SELECT target, server, n FROM live_counts").fetchall()


def live_total(conn):
    """How many check-ins are live, from the same counts."""
    return conn.execute("SELECT COALESCE(SUM(n), 0) FROM live_counts").fetchone()[0]


def cancel(conn, ids):
    """Cancel each id; return the ids that were not live (unknown or finished)."""
    refused = []
    now = clock.now()
    with store.tx(conn):
        for task_id in ids:
            cur = conn.execute("UPDATE tasks SET status = 'cancelled', lease_until = NULL, "
                               "deferred = NULL, deferred_since = NULL, updated = ? "
                               "WHERE id = ? AND status IN ('pending', 'running')",
                               (now, task_id))
            if cur.rowcount == 0:
                refused.append(task_id)
    return refused


def attempts(conn, task_id=None, limit=50):
    """The last LIMIT attempts (of TASK_ID, or all), oldest first, as a cursor: the
    LIMIT-th latest is found first, then everything from it read in order."""
    where, params = ("WHERE task_id = ?", (task_id,)) if task_id is not None else ("", ())
    cutoff = conn.execute(f"SELECT at, id FROM attempts {where} ORDER BY at DESC, id DESC "
                          "LIMIT 1 OFFSET ?", (*params, limit - 1)).fetchone()
    if cutoff is not None:
        where = f"{where} AND" if where else "WHERE"
        where, params = f"{where} (at, id) >= (?, ?)", (*params, *cutoff)
    return conn.execute(f"SELECT * FROM attempts {where} ORDER BY at, id", params)


def failures(conn, since):
    """Attempts logged 'failed' (a check-in given up) at or after SINCE, oldest first."""
    return conn.execute("SELECT * FROM attempts WHERE outcome = 'failed' AND at >= ? "
                        "ORDER BY at, id", (since,)).fetchall()


def outcomes(conn, since, targets=None):
    """How the attempts logged at or after SINCE went: {outcome: count}, for every
    outcome a pass records (delivered, sent, recovered, unsubmitted, deferred, ...)."""
    counts = {}
    for target, outcome, n in conn.execute(
            "SELECT target, outcome, COUNT(*) FROM attempts WHERE at >= ? GROUP BY target, "
            "outcome", (since,)):
        if targets is None or targets(target):
            counts[outcome] = counts.get(outcome, 0) + n
    return counts


def due_targets(conn, now):
    """The (server, target) pairs with an occurrence that may be claimed now."""
    return conn.execute(f"SELECT DISTINCT server, target FROM tasks WHERE {CLAIMABLE} "
                        "ORDER BY server, target", {"now": now, "locked": 1}).fetchall()


def claimable(conn, now):
    """Every occurrence a pass could claim at NOW (for a dry run)."""
    return conn.execute(f"{WITH_HOLD} WHERE {CLAIMABLE} ORDER BY not_before, tasks.id",
                        {"now": now, "locked": 0}).fetchall()


def next_wakeup(conn):
    """The earliest time at which something may become claimable, or None.  Each
    part is a walk of an index to its first row: the earliest pending check-in
    of an account not held, the end of each hold that has check-ins waiting,
    the earliest lease."""
    row = conn.execute(
        "SELECT MIN(t) FROM ("
        "SELECT * FROM (SELECT not_before AS t FROM tasks WHERE status = 'pending' AND "
        "account NOT IN (SELECT name FROM accounts WHERE state = 'suspended') "
        "ORDER BY not_before LIMIT 1) "
        "UNION ALL SELECT until FROM accounts a WHERE state = 'suspended' AND EXISTS "
        "(SELECT 1 FROM tasks WHERE account = a.name AND status = 'pending') "
        "UNION ALL SELECT * FROM (SELECT lease_until FROM tasks INDEXED BY tasks_lease "
        "WHERE status = 'running' ORDER BY lease_until LIMIT 1) "
        "UNION ALL SELECT MIN(until) FROM accounts WHERE state = 'suspended')").fetchone()
    return row[0]


def holds_ended(conn, now):
    """True if some account's hold for a usage limit has ended by NOW (a pass then
    resumes its windows: limits.resume_due)."""
    return conn.execute("SELECT 1 FROM accounts WHERE state = 'suspended' AND until <= ? "
                        "LIMIT 1", (now,)).fetchone() is not None


def next_occurrence(due, every_s, now):
    """The first point of the schedule due + k * every_s that is after NOW."""
    if due > now:
        return due
    return due + (int((now - due) // every_s) + 1) * every_s


def was_held(task, now):
    """True if TASK's account was suspended at some time between its due time and NOW."""
    since, until = task["held_since"], task["held_until"]
    return since is not None and since <= now and (until is None or until >= task["due"])


def plan(task, now):
    """What a pass does with a claimable task at NOW: 'deliver', 'late' or 'miss'.

    Catch-up applies only to an occurrence first picked up more than its grace
    late; one already attempted, or held for a usage limit, is delivered.
    """
    late = now - task["due"]
    if task["picked"] or late <= task["grace_s"] or was_held(task, now):
        return "deliver"
    return "late" if task["catch_up"] == "once" else "miss"


def _next_claimable(conn, targets, params):
    """The first claimable occurrence, by (not_before, id), at any of TARGETS.  One
    walk of the target index per name and status, each stopping at its first
    row: the cost does not grow with the backlog waiting there."""
    best = None
    for target in targets:
        for state in (PENDING_DUE, RUNNING_STALE):
            row = conn.execute(f"{WITH_HOLD} WHERE target = :target AND server = :server AND "
                               f"{state} AND {NOT_HELD} ORDER BY not_before, tasks.id LIMIT 1",
                               dict(params, target=target)).fetchone()
            if row is not None and (best is None or (row["not_before"], row["id"]) <
                                    (best["not_before"], best["id"])):
                best = row
    return best


def claim(conn, server, targets, now=None, lease=LEASE_S, locked=False):
    """Claim the next occurrence due on SERVER at any of TARGETS (the names of one
    pane; a single name will do), applying the catch-up policy.  LOCKED: the
    caller holds the pane's lock (see CLAIMABLE).

    Returns (task, action) with action 'deliver' or 'late', or None when
    nothing is due.  Occurrences skipped by policy are marked on the way.
    """
    return claim_each(conn, server, [targets], now, lease, locked)[0]


def claim_each(conn, server, groups, now=None, lease=LEASE_S, locked=False):
    """claim() for each of GROUPS (each the names of one pane), in one transaction:
    a pass's round claims for all its panes with one commit."""
    now = clock.now() if now is None else now
    params = {"server": server, "now": now, "locked": int(locked)}
    with store.tx(conn):
        return [_claim(conn, [targets] if isinstance(targets, str) else list(targets), params,
                       now, lease) for targets in groups]


def _claim(conn, targets, params, now, lease):
    while True:
        task = _next_claimable(conn, targets, params)
        if task is None:
            return None
        if task["status"] == "running":
            # Its runner died (or hung) after claiming: count that attempt, then retry,
            # unless the retries are used up (a note that kills its runner stops here).
            _log(conn, task, now, None, "expired",
                 "lease expired: the runner that claimed it did not finish"
                 if task["lease_until"] <= now else
                 "the runner that claimed it is gone (its pane was free)")
            conn.execute("UPDATE tasks SET attempts = attempts + 1 WHERE id = ?",
                         (task["id"],))
            if task["attempts"] + 1 > task["retries"]:
                deaths = conn.execute(
                    "SELECT COUNT(*) FROM attempts WHERE task_id = ? AND due = ? AND "
                    "outcome = 'expired'", (task["id"], task["due"])).fetchone()[0]
                _give_up(conn, get(conn, task["id"]), now, None,
                         f"gave up: the runner died {deaths} times while delivering it")
                continue
        action = plan(task, now)
        if action == "miss":
            _missed(conn, task, now)
            continue
        conn.execute("UPDATE tasks SET status = 'running', lease_until = ?, picked = 1, "
                     "updated = ? WHERE id = ?", (now + lease, now, task["id"]))
        return get(conn, task["id"]), action


def _missed(conn, task, now):
    late = clock.fmt_duration(now - task["due"])
    _log(conn, task, now, None, "missed", f"skipped by catch-up policy: {late} late")
    if task["every_s"]:
        _advance(conn, task, now)
    else:
        conn.execute("UPDATE tasks SET status = 'missed', lease_until = NULL, updated = ? "
                     "WHERE id = ?", (now, task["id"]))


def _advance(conn, task, now):
    """Move a recurring task to its next occurrence after NOW."""
    nxt = next_occurrence(task["due"], task["every_s"], now)
    conn.execute("UPDATE tasks SET status = 'pending', due = ?, not_before = ?, attempts = 0, "
                 "picked = 0, lease_until = NULL, reason = NULL, typed = NULL, updated = ? "
                 "WHERE id = ?",
                 (nxt, nxt, now, task["id"]))


def _log(conn, task, now, pane, outcome, detail):
    conn.execute("INSERT INTO attempts (task_id, at, due, target, pane, outcome, detail) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?)",
                 (task["id"], now, task["due"], task["target"], pane, outcome, detail))


def finish(conn, task, outcome, detail=None, pane=None, now=None):
    """Record the outcome of a claimed attempt.

    OUTCOME: one of DELIVERED; 'retry' or 'unsubmitted' (a failed attempt:
    back off, or give up after the task's retries; after 'unsubmitted' the note
    is still in the input, and `typed` stays set so that the next attempt
    presses Enter instead of typing it again); 'refused' (it can never be
    typed, as a note holding a control character: fail now, recurring or not).
    Returns the status the task is left in (or None if the claim was lost).
    """
    return finish_each(conn, [(task, outcome, detail, pane)], now)[0]


def finish_each(conn, results, now=None):
    """finish() for each (task, outcome, detail, pane) of RESULTS, in one
    transaction (a round's outcomes with one commit); returns their statuses."""
    now = clock.now() if now is None else now
    with store.tx(conn):
        return [_finish(conn, task, outcome, detail, pane, now)
                for task, outcome, detail, pane in results]


def _finish(conn, task, outcome, detail, pane, now):
    current = conn.execute("SELECT * FROM tasks WHERE id = ? AND status = 'running' AND "
                           "lease_until = ?", (task["id"], task["lease_until"])).fetchone()
    _log(conn, task, now, pane, outcome if current else f"{outcome} (claim lost)", detail)
    if current is None:
        return None
    conn.execute("UPDATE tasks SET deferred = NULL, deferred_since = NULL" +
                 ("" if outcome == "unsubmitted" else ", typed = NULL") + " WHERE id = ?",
                 (task["id"],))
    tries = current["attempts"] + 1
    if outcome in DELIVERED:
        if current["every_s"]:
            _advance(conn, current, now)
            return "pending"
        conn.execute("UPDATE tasks SET status = 'done', attempts = ?, lease_until = NULL, "
                     "reason = NULL, updated = ? WHERE id = ?", (tries, now, task["id"]))
        return "done"
    if outcome == "refused" or tries > current["retries"]:
        conn.execute("UPDATE tasks SET attempts = ? WHERE id = ?", (tries, task["id"]))
        if outcome == "refused":
            return _give_up(conn, current, now, pane, detail, whole_task=True)
        return _give_up(conn, current, now, pane, f"gave up after {tries} attempts: {detail}")
    delay = min(RETRY_BASE_S * 2 ** (tries - 1), RETRY_CAP_S)
    conn.execute("UPDATE tasks SET status = 'pending', attempts = ?, not_before = ?, "
                 "lease_until = NULL, reason = ?, updated = ? WHERE id = ?",
                 (tries, now + delay, detail, now, task["id"]))
    _keep_place(conn, current, now + delay)
    return "pending"


def _keep_place(conn, task, until, state=None, detail=None, now=None):
    """TASK waits until UNTIL (deferred, held, retried): the check-ins stored for its
    target (that name, that server) and due after it wait as long, just behind it
    in the order they were due, so that a note put back is not overtaken by them.
    (One added later, or stored under another name of the pane, is not held back:
    orch-sched(1) says so.  An index range over the target's check-ins due by UNTIL;
    each gets a microsecond per second it was due after TASK, at most one second,
    so that the claim's (not_before, id) order stays their due order.)

    For a deferral (STATE: the pane's state, DETAIL: what showed it) they are
    deferred too, with the reason that they wait behind TASK: `status` then counts
    them as waiting on the pane, not as overdue."""
    deferral = ("" if state is None else ", deferred = :state, reason = :reason, "
                "deferred_since = COALESCE(deferred_since, :now)")
    conn.execute(f"UPDATE tasks SET not_before = :until + MIN(due - :due, 1e6) * 1e-6{deferral} "
                 "WHERE target = :target AND server = :server AND status = 'pending' AND "
                 "not_before < :until AND id != :id AND (due > :due OR (due = :due AND "
                 "id > :id))",
                 {"until": until, "due": task["due"], "target": task["target"],
                  "server": task["server"], "id": task["id"], "state": state,
                  "reason": f"behind check-in {task['id']}: {detail}", "now": now})


def _give_up(conn, task, now, pane, reason, whole_task=False):
    """TASK's occurrence failed for good: a recurring task waits for its next one
    (unless WHOLE_TASK), a one-shot task is failed.  Returns the status left."""
    _log(conn, task, now, pane, "failed", reason)
    if task["every_s"] and not whole_task:
        _advance(conn, task, now)
        return "pending"
    conn.execute("UPDATE tasks SET status = 'failed', lease_until = NULL, reason = ?, "
                 "updated = ? WHERE id = ?", (reason, now, task["id"]))
    return "failed"


def typing(conn, claimed, now=None):
    """Record that the notes of CLAIMED (claimed tasks) are about to be pasted."""
    now = clock.now() if now is None else now
    with store.tx(conn):
        for task in claimed:
            conn.execute("UPDATE tasks SET typed = ? WHERE id = ? AND status = 'running' AND "
                         "lease_until = ?", (now, task["id"], task["lease_until"]))


def hold(conn, task, until, detail, pane=None, now=None):
    """Put a claimed task back untried until UNTIL (a usage-limit hold): not a failed attempt."""
    now = clock.now() if now is None else now
    with store.tx(conn):
        cur = conn.execute("UPDATE tasks SET status = 'pending', not_before = ?, "
                           "lease_until = NULL, reason = ?, deferred = NULL, "
                           "deferred_since = NULL, updated = ? WHERE id = ? AND "
                           "status = 'running' AND lease_until = ?",
                           (until, detail, now, task["id"], task["lease_until"]))
        _log(conn, task, now, pane, "held" if cur.rowcount else "held (claim lost)", detail)
        if cur.rowcount:
            _keep_place(conn, task, until)


def release(conn, task, detail, pane=None, now=None):
    """Put a claimed task back untried, as it was before the claim (nothing was typed:
    the runner failed before it could, as on a full disk)."""
    now = clock.now() if now is None else now
    with store.tx(conn):
        cur = conn.execute("UPDATE tasks SET status = 'pending', lease_until = NULL, "
                           "typed = NULL, updated = ? WHERE id = ? AND status = 'running' "
                           "AND lease_until = ?", (now, task["id"], task["lease_until"]))
        _log(conn, task, now, pane, "released" if cur.rowcount else "released (claim lost)",
             detail)


def defer(conn, task, state, detail, pane=None, now=None):
    """Put a claimed task back untried because its pane is in STATE (dialog,
    busy, draft): no key was sent and no attempt is counted.

    The log gets a row when the state changes, not at every look.  The pane is
    looked at again after DEFER_MIN_S, more slowly as the wait grows, to at most
    DEFER_MAX_S.  Catch-up still applies when the task finally goes: a task
    never attempted is as unpicked as before its claim.  Returns when it is
    due again (None if the claim was lost).
    """
    now = clock.now() if now is None else now
    with store.tx(conn):
        row = conn.execute("SELECT deferred, deferred_since FROM tasks WHERE id = ? AND "
                           "status = 'running' AND lease_until = ?",
                           (task["id"], task["lease_until"])).fetchone()
        if row is None:
            _log(conn, task, now, pane, "deferred (claim lost)", detail)
            return None
        since = row["deferred_since"] if row["deferred"] is not None else now
        until = now + min(max(DEFER_MIN_S, (now - since) / 4), DEFER_MAX_S)
        conn.execute("UPDATE tasks SET status = 'pending', not_before = ?, lease_until = NULL, "
                     "reason = ?, deferred = ?, deferred_since = ?, picked = (attempts > 0), "
                     "updated = ? WHERE id = ?",
                     (until, detail, state, since, now, task["id"]))
        _keep_place(conn, task, until, state, detail, now)
        if row["deferred"] != state:
            _log(conn, task, now, pane, "deferred", detail)
    return until


def prune(conn, age_s, now=None):
    """Forget finished tasks and log rows older than AGE_S; return (tasks, rows) removed."""
    now = clock.now() if now is None else now
    cutoff = now - age_s
    with store.tx(conn):
        marks = ", ".join("?" * len(FINISHED))
        rows = conn.execute("DELETE FROM attempts WHERE at < ?", (cutoff,)).rowcount
        gone = conn.execute(f"DELETE FROM tasks WHERE status IN ({marks}) AND updated < ?",
                            (*FINISHED, cutoff)).rowcount
    return gone, rows


def overdue(conn, now=None):
    """Pending occurrences never attempted and past due + grace (held or backing off: not)."""
    now = clock.now() if now is None else now
    # (These terms are those of the partial index tasks_overdue: a search, not a scan.)
    rows = conn.execute("SELECT tasks.*, a.since AS held_since, a.until AS held_until FROM "
                        "tasks INDEXED BY tasks_overdue LEFT JOIN accounts a ON "
                        "a.name = tasks.account WHERE status = 'pending' AND picked = 0 AND "
                        "deferred IS NULL AND due + grace_s < ? ORDER BY due", (now,)).fetchall()
    return [t for t in rows if not was_held(t, now)]


def waiting(conn, now=None):
    """Check-ins deferred for longer than their grace: the pane has shown a
    dialog, a busy agent or a draft all along (a dialog waits for a person)."""
    now = clock.now() if now is None else now
    return conn.execute("SELECT * FROM tasks INDEXED BY tasks_waiting WHERE status = 'pending' "
                        "AND deferred IS NOT NULL AND deferred_since + grace_s < ? "
                        "ORDER BY deferred_since, id", (now,)).fetchall()


# --- waking the daemon --------------------------------------------------------

def wake_path():
    return os.path.join(paths.state_dir(), WAKE_FIFO)


def wake():
    """Tell a sleeping daemon that the tasks changed (no-op when none listens)."""
    paths.poke_fifo(wake_path())


def as_json(task):
    return {
        "id": task["id"], "target": task["target"], "note": task["note"],
        "status": task["status"], "due": clock.iso(task["due"]), "every_s": task["every_s"],
        "attempts": task["attempts"], "key": task["key"], "account": task["account"],
        "server": task["server"], "not_before": clock.iso(task["not_before"]),
        "catch_up": task["catch_up"], "grace_s": task["grace_s"], "retries": task["retries"],
        "reason": task["reason"], "deferred": task["deferred"],
        "deferred_since": clock.iso(task["deferred_since"]), "typed": clock.iso(task["typed"]),
        "created": clock.iso(task["created"]),
        "updated": clock.iso(task["updated"]),
    }

