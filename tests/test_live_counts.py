"""The live counts the status line reads (table live_counts, kept by triggers) equal
a count of the tasks table itself after every kind of change the tools make:
adds, batches, claims, every outcome of an attempt, recurrences, deferrals,
releases, cancels, prunes, and a store migrated from before the counts."""

import os
import random
import sqlite3
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))

from orch import store, tasks  # noqa: E402

T0 = 1795636800.0


def truth(conn):
    return {(t, s): n for t, s, n in conn.execute(
        "SELECT target, server, COUNT(*) FROM tasks WHERE status IN ('pending', 'running') "
        "GROUP BY target, server")}


def counts(conn):
    return {(t, s): n for t, s, n in tasks.live_per_target(conn)}


def check(conn):
    expected = truth(conn)
    assert counts(conn) == expected
    assert tasks.live_total(conn) == sum(expected.values())


def test_every_writer_keeps_the_counts():
    conn = store.connect()
    rng = random.Random(14)
    targets = ["a:0", "b:0", "%3", "c:1.2"]
    ids = [tasks.add(conn, rng.choice(targets), "srv", f"n{i}", T0 + i,
                     every_s=60.0 if i % 3 == 0 else None, key=f"k{i}" if i % 5 == 0 else None)
           for i in range(40)]
    check(conn)
    tasks.add(conn, "b:0", "srv", "same key, new target", T0, key="k0")  # an update by key
    check(conn)
    ids += tasks.add_many(conn, [dict(target=rng.choice(targets), server="other",
                                      note=f"batch {i}", due=T0 + i) for i in range(30)])
    check(conn)
    outcomes = ["delivered", "retry", "unsubmitted", "failed", "release", "defer"]
    for step in range(200):
        now = T0 + 1000 + step * 30
        target = rng.choice(targets)
        got = tasks.claim(conn, rng.choice(["srv", "other"]), target, now)
        check(conn)
        if got:
            task = got[0]
            outcome = rng.choice(outcomes)
            if outcome == "release":
                tasks.release(conn, task, "disk full", now=now)
            elif outcome == "defer":
                tasks.defer(conn, task, "busy", "a spinner", now=now)
            else:
                tasks.finish(conn, task, outcome, "detail", now=now)
            check(conn)
        if step % 17 == 0:
            live = [r[0] for r in conn.execute(
                "SELECT id FROM tasks WHERE status IN ('pending', 'running')")]
            refused = tasks.cancel(conn, rng.sample(live, min(3, len(live))) + [10 ** 9])
            assert refused == [10 ** 9]
            check(conn)
    assert tasks.live_total(conn) > 0
    tasks.cancel(conn, [r[0] for r in conn.execute("SELECT id FROM tasks")])
    check(conn)
    assert counts(conn) == {}
    assert tasks.prune(conn, 0, now=T0 + 10 ** 6)[0] > 0
    check(conn)


def test_a_deleted_live_task_and_a_moved_one_are_counted_off():
    conn = store.connect()
    one = tasks.add(conn, "a:0", "srv", "x", T0)
    two = tasks.add(conn, "a:0", "srv", "y", T0)
    with store.tx(conn):
        conn.execute("UPDATE tasks SET target = 'b:0' WHERE id = ?", (one,))
    check(conn)
    assert counts(conn) == {("a:0", "srv"): 1, ("b:0", "srv"): 1}
    with store.tx(conn):
        conn.execute("DELETE FROM tasks WHERE id = ?", (two,))
    check(conn)
    assert counts(conn) == {("b:0", "srv"): 1}


def test_a_store_from_before_the_counts_is_counted_when_migrated(tmp_path):
    path = str(tmp_path / "orch.db")
    old = sqlite3.connect(path, isolation_level=None)
    for number in range(8):
        for statement in store._statements(store.MIGRATIONS[number]):
            old.execute(statement)
    old.execute("PRAGMA user_version=8")
    for i in range(25):
        old.execute("INSERT INTO tasks (target, server, note, due, not_before, status, "
                    "updated, created) VALUES (?, 'srv', 'n', ?, ?, ?, ?, ?)",
                    (f"t{i % 3}:0", T0, T0, ("pending", "running", "delivered")[i % 3],
                     T0, T0))
    old.close()
    os.chmod(path, 0o600)
    conn = store.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(store.MIGRATIONS)
    check(conn)
    assert tasks.live_total(conn) == 17
