"""orch-sched under concurrency, crashes and downtime: once, on time, visibly."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

from conftest import wait_until
from orchsched import add, at, epoch, run_pass, show

HOUR = 3600.0
T0 = 1795636800.0   # 2026-11-25T20:00:00Z
LIB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib")







def test_many_runners_and_a_daemon_deliver_each_task_exactly_once(tmux, run, hermetic):
    agents = [tmux.agent("load", f"w{i}") for i in range(20)]
    sys.path.insert(0, LIB)
    from orch import store, tasks
    conn = store.connect()
    now = time.time()
    server = os.environ["ORCH_TMUX_SOCKET"]
    for i in range(300):
        tasks.add(conn, agents[i % 20].target, server, f"task {i:03d} for {agents[i % 20].target}",
                  now - 1)
    conn.close()
    loops = [subprocess.Popen([sys.executable, "-c", (
        "import subprocess, sys\n"
        "for _ in range(6):\n"
        "    assert subprocess.run(['orch-sched', 'run']).returncode == 0\n")])
        for _ in range(4)]
    daemon = run("orch-sched", "daemon", "--detach")
    assert daemon.returncode == 0
    assert [p.wait(timeout=120) for p in loops] == [0] * 4
    for i, agent in enumerate(agents):
        expected = sorted(f"task {n:03d} for {agent.target}".encode() for n in range(i, 300, 20))
        got = agent.wait_received(b"x" * sum(len(e) + 1 for e in expected), timeout=60)
        assert sorted(got.split(b"\r")[:-1]) == expected
    r = run("orch-sched", "list", "--all", "--json")
    assert {t["status"] for t in json.loads(r.stdout)} == {"done"}
    log = json.loads(run("orch-sched", "log", "--json", "--limit", "1000").stdout)
    assert len(log) == 300 and {a["outcome"] for a in log} == {"sent"}


def test_runner_killed_after_claiming_is_taken_over_by_the_next_pass(tmux, run, hermetic):
    agent = tmux.agent("crash", "w")
    task_id = add(run, agent.target, "survives a crash", env=at(T0))
    # A real runner process claims the task, then dies by SIGKILL before typing it.
    claimer = subprocess.Popen([sys.executable, "-c", (
        f"import sys, time; sys.path.insert(0, {LIB!r})\n"
        "from orch import store, tasks\n"
        f"claimed = tasks.claim(store.connect(), {os.environ['ORCH_TMUX_SOCKET']!r}, "
        f"{agent.target!r}, now={T0})\n"
        "assert claimed is not None\n"
        "print('claimed', flush=True)\n"
        "time.sleep(600)\n")], stdout=subprocess.PIPE, text=True)
    assert claimer.stdout.readline() == "claimed\n"
    claimer.kill()
    claimer.wait()
    assert show(run, task_id)["status"] == "running"
    # Its lease (60 s) still holds, but its pane's lock is free: only a runner holding
    # that lock claims there, so this claim's runner is gone and the next pass takes over.
    run_pass(run, T0 + 30)
    assert agent.wait_received(b"survives a crash\r") == b"survives a crash\r"
    t = show(run, task_id)
    assert t["status"] == "done"
    assert [a["outcome"] for a in t["log"]] == ["expired", "sent"]
    assert t["log"][0]["detail"] == "the runner that claimed it is gone (its pane was free)"


def test_catch_up_once_delivers_one_late_occurrence(tmux, run):
    agent = tmux.agent("late", "w")
    one_shot = add(run, agent.target, "one-shot", env=at(T0))
    recurring = add(run, "--every", "10m", agent.target, "recurring", env=at(T0))
    run_pass(run, T0 + HOUR)         # six occurrences of the recurring one were missed
    expected = b"one-shot\rrecurring\r"
    assert agent.wait_received(expected) == expected
    t = show(run, one_shot)
    assert t["status"] == "done" and "late by 1h" in t["log"][-1]["detail"]
    t = show(run, recurring)
    assert t["status"] == "pending" and t["due"] == "2026-11-25T21:10:00Z"
    assert [a["outcome"] for a in t["log"]] == ["sent"]
    run_pass(run, T0 + HOUR + 1)
    assert agent.received() == expected


def test_catch_up_skip_marks_missed(tmux, run):
    agent = tmux.agent("skip", "w")
    one_shot = add(run, "--catch-up", "skip", agent.target, "one-shot", env=at(T0))
    recurring = add(run, "--catch-up", "skip", "--every", "10m", agent.target, "recurring",
                    env=at(T0))
    on_time = add(run, "--catch-up", "skip", "--grace", "2h", agent.target, "in grace",
                  env=at(T0))
    r = run("orch-sched", "run", "--dry-run", env=at(T0 + HOUR))
    assert r.returncode == 0
    assert sorted(line.split("\t")[:2] for line in r.stdout.splitlines()) == sorted(
        [["miss", str(one_shot)], ["miss", str(recurring)], ["deliver", str(on_time)]])
    assert show(run, one_shot)["status"] == "pending"   # a dry run changes nothing
    run_pass(run, T0 + HOUR)
    assert agent.wait_received(b"in grace\r") == b"in grace\r"
    t = show(run, one_shot)
    assert t["status"] == "missed" and t["log"][-1]["outcome"] == "missed"
    t = show(run, recurring)
    assert t["status"] == "pending" and t["due"] == "2026-11-25T21:10:00Z"
    assert [a["outcome"] for a in t["log"]] == ["missed"]
    r = run("orch-sched", "list", "--status", "missed", "--porcelain")
    assert r.returncode == 0 and r.stdout.split("\t")[0] == str(one_shot)


def test_an_attempted_occurrence_is_never_skipped(tmux, run):
    task_id = add(run, "--catch-up", "skip", "gone:w", "retrying", env=at(T0))
    run_pass(run, T0)                 # target missing: a failed attempt, retried later
    assert show(run, task_id)["attempts"] == 1
    agent = tmux.agent("gone", "w")
    run_pass(run, T0 + HOUR)          # far past the grace, but it was already attempted
    assert agent.wait_received(b"retrying\r") == b"retrying\r"
    assert show(run, task_id)["status"] == "done"


def retry_gaps(run, task_id, start=T0):
    """Run a pass at each retry time of a task that keeps failing, from START until it
    is no longer pending; return the gaps between attempts and the last pass's time."""
    now, gaps = start, []
    for _ in range(20):
        run_pass(run, now)
        t = show(run, task_id)
        if t["status"] != "pending":
            return gaps, now
        gaps.append(round(epoch(t["not_before"]) - now))
        now = epoch(t["not_before"])
    raise AssertionError(f"task {task_id} was still pending after 20 attempts")


def test_backoff_doubles_then_gives_up_with_the_reason(tmux, run):
    tmux.agent("present", "w")
    task_id = add(run, "absent:w", "never arrives", env=at(T0))
    gaps, now = retry_gaps(run, task_id)
    assert gaps == [30, 60, 120, 240, 480]
    t = show(run, task_id)
    assert t["status"] == "failed" and t["attempts"] == 6
    assert "gave up after 6 attempts" in t["reason"] and "can't find" in t["reason"]
    outcomes = [a["outcome"] for a in t["log"]]
    assert outcomes == ["retry"] * 6 + ["failed"]
    run_pass(run, now + HOUR)
    assert len(show(run, task_id)["log"]) == 7


def test_backoff_is_capped_at_fifteen_minutes(run, tmp_path):
    task_id = add(run, "--retries", "8", "p:0", "x", env={
        "ORCH_NOW": repr(T0), "ORCH_TMUX_SOCKET": str(tmp_path / "no-server")})
    gaps, _ = retry_gaps(run, task_id)
    assert gaps == [30, 60, 120, 240, 480, 900, 900, 900]
    t = show(run, task_id)
    assert t["status"] == "failed" and "tmux server not running" in t["reason"]


def test_status_exit_codes(run):
    r = run("orch-sched", "status")
    assert r.returncode == 0 and "daemon: not running" in r.stdout
    add(run, "--in", "5m", "p:0", "pending")    # on the real clock: the daemon waits for it
    r = run("orch-sched", "status", "--json")
    assert r.returncode == 1        # pending work and no daemon to do it
    assert json.loads(r.stdout)["overdue"] == 0
    d = run("orch-sched", "daemon", "--detach")
    assert d.returncode == 0
    r = run("orch-sched", "status", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["healthy"] is True
    r = run("orch-sched", "status", "--json", env=at(time.time() + HOUR))  # past due + grace
    assert r.returncode == 1 and json.loads(r.stdout)["overdue"] == 1


def test_sigterm_finishes_the_delivery_in_flight(tmux, run, monkeypatch):
    monkeypatch.setenv("ORCH_ENTER_DELAY", "2")
    agent = tmux.agent("term", "w")
    task_id = add(run, agent.target, "in flight")
    d = run("orch-sched", "daemon", "--detach")
    assert d.returncode == 0
    pid = int(d.stdout)
    agent.wait_received(b"in flight")          # typed; the Enter is still to come
    assert agent.received() == b"in flight"
    os.kill(pid, signal.SIGTERM)
    assert agent.wait_received(b"in flight\r") == b"in flight\r"
    wait_until(lambda: not os.path.exists(f"/proc/{pid}") or
               open(f"/proc/{pid}/stat").read().split()[2] == "Z", what="daemon exit")
    assert show(run, task_id)["status"] == "done"


def test_upgrade_from_the_first_schema_keeps_every_task(run, hermetic):
    sys.path.insert(0, LIB)
    from orch import store
    hermetic.mkdir()
    db = sqlite3.connect(hermetic / "orch.db", isolation_level=None)
    db.executescript(store.MIGRATIONS[0])
    db.execute("PRAGMA user_version=1")
    db.execute("INSERT INTO tasks (target, server, note, due, every_s, key, status, attempts, "
               "not_before, created, updated) VALUES ('p:0', '/tmp/s', 'kept note', ?, 600, "
               "'k', 'pending', 2, ?, ?, ?)", (T0, T0 + 60, T0, T0))
    db.execute("INSERT INTO attempts (task_id, at, due, target, outcome, detail) "
               "VALUES (1, ?, ?, 'p:0', 'retry', 'old')", (T0, T0))
    db.close()
    r = run("orch-sched", "show", "--json", "1")
    assert r.returncode == 0, r.stderr
    t = json.loads(r.stdout)
    assert (t["note"], t["key"], t["every_s"], t["attempts"]) == ("kept note", "k", 600, 2)
    assert (t["catch_up"], t["grace_s"], t["retries"]) == ("once", 600, 5)
    assert [a["detail"] for a in t["log"]] == ["old"]
    version = sqlite3.connect(hermetic / "orch.db").execute("PRAGMA user_version").fetchone()[0]
    assert version == len(store.MIGRATIONS)


def test_prune_forgets_old_finished_tasks_only(tmux, run):
    agent = tmux.agent("prune", "w")
    old = add(run, agent.target, "old", env=at(T0))
    run_pass(run, T0)
    agent.wait_received(b"old\r")
    pending = add(run, "--in", "90d", agent.target, "far future", env=at(T0))
    r = run("orch-sched", "prune", env=at(T0 + 31 * 86400))
    assert r.returncode == 0
    assert run("orch-sched", "show", str(old)).returncode == 1
    assert show(run, pending)["status"] == "pending"


def test_a_check_in_whose_runner_dies_every_time_fails_after_its_retries(tmux, run):
    agent = tmux.agent("dies", "w")
    task_id = add(run, "--retries", "2", agent.target, "kills its runner", env=at(T0))
    claim = (f"import sys; sys.path.insert(0, {LIB!r})\n"
             "from orch import store, tasks\n"
             f"print(tasks.claim(store.connect(), {os.environ['ORCH_TMUX_SOCKET']!r}, "
             f"{agent.target!r}, now=float(sys.argv[1])) is not None)\n")
    # Each runner claims the occurrence and dies before it types (its lease then expires).
    for n in range(3):
        claimed = subprocess.run([sys.executable, "-c", claim, str(T0 + n * 61)],
                                 capture_output=True, text=True)
        assert claimed.returncode == 0 and claimed.stdout == "True\n", claimed.stderr
    run_pass(run, T0 + 3 * 61)
    t = show(run, task_id)
    assert t["status"] == "failed"
    assert t["reason"] == "gave up: the runner died 3 times while delivering it"
    assert [a["outcome"] for a in t["log"]] == ["expired", "expired", "expired", "failed"]
    assert agent.received() == b""


def test_a_daemon_waits_rather_than_spins_on_a_pane_another_runner_holds(tmux, run):
    # Due work it cannot take (the pane is another runner's) leaves the next
    # wake-up in the past: the daemon must look again shortly, not at once.
    sys.path.insert(0, LIB)
    from orch import deliver, locks
    agent = tmux.agent("taken", "w")
    pane = tmux("display-message", "-p", "-t", agent.target_exact(), "#{pane_id}").strip()
    fd = locks.open_lock(deliver.pane_lock_name(os.environ["ORCH_TMUX_SOCKET"], pane))
    assert locks.acquire(fd, blocking=False)
    add(run, agent.target, "after the other runner")
    proc = subprocess.Popen(["orch-sched", "daemon"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        def passes_made():
            r = run("orch-sched", "status", "--json")
            return r.returncode in (0, 1) and json.loads(r.stdout)["last_pass"]
        wait_until(passes_made, what="the daemon's first pass")

        def cpu():
            with open(f"/proc/{proc.pid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        before, start = cpu(), time.monotonic()
        time.sleep(3)  # the window measured: what the daemon does while the pane is taken
        used = cpu() - before
        assert used < 0.3 * (time.monotonic() - start), f"{used:.2f} s of CPU in 3 s"
        assert agent.received() == b""
        os.close(fd)  # the other runner is done
        assert agent.wait_received(b"after the other runner\r") == b"after the other runner\r"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0 and err == ""
