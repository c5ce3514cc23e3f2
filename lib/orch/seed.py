"""Migration from the scheduler orch replaces: its task_queue.db becomes check-ins.

Rules:
- The seed's database is only read (opened read-only; it may belong to a
  scheduler still running).  Its table `tasks` has session_name,
  window_index, next_run (epoch seconds), interval_minutes and note (and
  agent_role, last_run, retry_count, which a check-in has no use for).
- Each row becomes one check-in for session:window, due at next_run,
  recurring every interval_minutes when that is over 0.  A row that cannot
  be one (next_run not a number, a bad target or note) is skipped with the
  reason; the others are imported all the same.
- Importing is idempotent: each row's check-in has a key naming the database
  and the row, and a row whose key was ever imported is not imported again.
"""

import hashlib
import os
import re
import sqlite3

from . import clock, tasks, tmux
from .errors import DATAERR, OrchError

NUMBER = re.compile(r"[0-9]+(\.[0-9]+)?", re.ASCII)


def rows(path):
    """The seed's tasks as dicts (with their rowid), read-only."""
    from urllib.parse import quote
    if not os.path.isfile(path):
        raise OrchError(f"{path}: no such file", DATAERR)
    try:
        conn = sqlite3.connect(f"file:{quote(os.path.abspath(path))}?mode=ro", uri=True)
        try:
            conn.row_factory = sqlite3.Row
            return [dict(r) for r in conn.execute("SELECT rowid AS rowid_, * FROM tasks "
                                                  "ORDER BY rowid")]
        finally:
            conn.close()
    except sqlite3.Error as e:
        raise OrchError(f"{path} is not a seed scheduler's task_queue.db ({e})",
                        DATAERR) from None


def import_db(conn, path, server):
    """Add the check-ins of the seed database PATH.  Returns (ids added, [(row
    number, why it was skipped)])."""
    prefix = "seed:" + hashlib.sha1(os.path.realpath(path).encode(
        "utf-8", "surrogateescape")).hexdigest()[:12]
    added, skipped = [], []
    for row in rows(path):
        n = row["rowid_"]
        try:
            due, every, target, note = _check_in(row)
        except OrchError as e:
            skipped.append((n, str(e)))
            continue
        key = f"{prefix}:{n}"
        if conn.execute("SELECT 1 FROM tasks WHERE key = ?", (key,)).fetchone():
            continue  # imported before (whatever became of it since)
        added.append(tasks.add(conn, target, server, note, due, every_s=every, key=key))
    return added, skipped


def _check_in(row):
    """(due, every_s, target, note) of one seed row; OrchError saying why not."""
    value = row.get("next_run")
    if isinstance(value, str) and NUMBER.fullmatch(value.strip()):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise OrchError(f"next_run {value!r} is not a number")
    if not clock.MIN_INSTANT <= value <= clock.MAX_INSTANT:
        raise OrchError(f"next_run {value!r} is out of range (years 2000 to 9999)")
    interval = row.get("interval_minutes") or 0
    if not isinstance(interval, (int, float)) or interval < 0:
        raise OrchError(f"interval_minutes {interval!r} is not a number of minutes")
    target = tmux.check_target(f"{row.get('session_name')}:{row.get('window_index')}")
    note = tasks.check_note(str(row.get("note") or ""))
    return float(value), (interval * 60.0 if interval > 0 else None), target, note

