"""The paths every pass and every status line take read an index, never the whole
tasks table: the plans SQLite chooses for the very statements these functions run
(recorded as they run, then explained) hold no SCAN of tasks, and a claim sorts
nothing, so a backlog on one pane costs its claims nothing."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))

from orch import dash, store, tasks  # noqa: E402

T0 = 1795636800.0


@pytest.fixture
def conn():
    conn = store.connect()
    for i in range(200):  # a backlog on one pane, a few elsewhere, one account held
        tasks.add(conn, "busy:0" if i % 4 else f"p{i}:0", "srv", f"note {i}", T0 + i,
                  account="held" if i % 10 == 0 else "default")
    with store.tx(conn):
        conn.execute("INSERT INTO accounts (name, state, since, until, updated) VALUES "
                     "('held', 'suspended', ?, ?, ?)", (T0, T0 + 3600, T0))
    return conn


def statements(conn, call):
    """The SELECT statements CALL() runs on CONN, with their values filled in."""
    seen = []
    conn.set_trace_callback(seen.append)
    try:
        call()
    finally:
        conn.set_trace_callback(None)
    return [s for s in seen if s.lstrip().upper().startswith(("SELECT", "WITH"))]


def plans(conn, sqls):
    return {sql: [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql)] for sql in sqls}


@pytest.mark.parametrize("name", ["next_wakeup", "overdue", "waiting", "due_targets", "claim",
                                  "status_line", "status_line_of_a_project"])
def test_no_path_scans_the_tasks_table(conn, name):
    calls = {"next_wakeup": lambda: tasks.next_wakeup(conn),
             "overdue": lambda: tasks.overdue(conn, T0 + 7200),
             "waiting": lambda: tasks.waiting(conn, T0 + 7200),
             "due_targets": lambda: tasks.due_targets(conn, T0 + 100),
             "claim": lambda: tasks.claim(conn, "srv", ["busy:0", "%9"], T0 + 150, locked=True),
             "status_line": lambda: dash.line(conn, now=T0 + 7200),
             "status_line_of_a_project": lambda: dash.line(conn, project="busy", now=T0 + 7200)}
    found = plans(conn, statements(conn, calls[name]))
    assert found, "no statement recorded"
    for sql, steps in found.items():
        scans = [s for s in steps if s.startswith(("SCAN tasks", "SCAN t "))]
        assert not scans, (sql, steps)
        if name == "claim" and "LIMIT 1" in sql:
            assert not any("TEMP B-TREE" in s for s in steps), (sql, steps)


def test_claims_still_take_the_earliest_due_of_all_a_pane_s_names(conn):
    tasks.add(conn, "%9", "srv", "by pane id, due first", T0 - 5)
    task, action = tasks.claim(conn, "srv", ["busy:0", "%9"], T0 + 150)
    assert task["note"] == "by pane id, due first" and action == "deliver"
    task, _ = tasks.claim(conn, "srv", ["busy:0", "%9"], T0 + 150)
    assert task["note"] == "note 1"  # then the backlog in order (note 0 is another pane's)


def test_the_dashboard_s_rows_per_target_are_one_query_that_sorts_nothing(conn):
    found = plans(conn, statements(conn, lambda: tasks.next_per_target(conn)))
    assert len(found) == 1
    [steps] = found.values()
    assert not any("TEMP B-TREE" in s for s in steps), steps
    rows = tasks.next_per_target(conn)
    busy = [(t["note"], n) for t, n in rows if t["target"] == "busy:0"]
    assert busy == [("note 1", 150)]  # its earliest, and how many wait there
