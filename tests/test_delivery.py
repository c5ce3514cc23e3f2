"""End to end: check-ins typed into a real tmux server, as received by a stand-in agent."""

import json
import os
import signal
import subprocess
import threading
import time

import pytest
from conftest import wait_until
from orchsched import add, epoch, log, run_pass, show

HOSTILE = [
    "-n leading dash",
    "--help",
    "C-c",
    "Enter",
    "ends with a semicolon;",
    "; kill-server ;",
    "$(touch /tmp/orch-pwned) `id` $HOME && rm -rf ~ || true",
    "'single' \"double\" \\backslash\\",
    "#{session_name} #(echo nope) #[fg=red]",
    "tabs\there\tand there",
    "unicode: ünïcødé → 日本語 🙂",
    "%1 {marked} ~ ! *",
]







@pytest.mark.parametrize("note", HOSTILE)
def test_hostile_notes_arrive_byte_for_byte(tmux, run, note):
    agent = tmux.agent("proj", "w")
    task_id = add(run, agent.target, note)
    run_pass(run)
    expected = note.encode() + b"\r"
    assert agent.wait_received(expected) == expected
    assert show(run, task_id)["status"] == "done"
    assert not os.path.exists("/tmp/orch-pwned")


def test_twenty_kilobyte_note_arrives_whole(tmux, run):
    agent = tmux.agent("big", "w")
    note = "".join(f"{i:05d} lorem ipsum; dolor $(sit) amet, consectetur\n"[:40]
                   for i in range(512))
    assert len(note) == 20480
    add(run, agent.target, "-", stdin=note)
    run_pass(run)
    expected = note.rstrip("\n").replace("\n", "\r").encode() + b"\r"
    assert agent.wait_received(expected) == expected


def test_multi_line_note_is_one_bracketed_paste_then_enter(tmux, run):
    agent = tmux.agent("brk", "w", bracketed=True)
    add(run, agent.target, "-", stdin="first line\nsecond; line\n")
    run_pass(run)
    expected = b"\x1b[200~first line\rsecond; line\x1b[201~\r"
    assert agent.wait_received(expected) == expected


def test_exact_target_never_prefix_matches_another_session(tmux, run):
    impostor = tmux.agent("project-impl", "0")
    early = add(run, "proj:0", "for proj, which does not exist yet")
    run_pass(run)
    real = tmux.agent("proj", "main")
    prefix = add(run, "proj:mai", "for a window named mai")
    good = add(run, "proj:main", "for proj:main")
    run_pass(run)
    assert real.wait_received(b"for proj:main\r") == b"for proj:main\r"
    assert impostor.received() == b""
    for task_id in (early, prefix):
        attempts = log(run, task_id)
        assert [a["outcome"] for a in attempts] == ["retry"]
        assert "can't find" in attempts[0]["detail"]
        assert show(run, task_id)["status"] == "pending"
    assert show(run, good)["status"] == "done"


def test_window_and_pane_forms_reach_the_same_pane(tmux, run):
    agent = tmux.agent("forms", "w")
    pane = tmux("list-panes", "-t", "=forms:=w", "-F", "#{pane_id}").strip()
    targets = ("forms:w", "forms:w.0", pane, "forms")
    for target in targets:
        add(run, target, f"via {target}")
    run_pass(run)
    expected = sorted(f"via {t}".encode() for t in targets)
    got = agent.wait_received(b"".join(e + b"\r" for e in expected))
    assert sorted(got.split(b"\r")[:-1]) == expected


def test_missing_session_is_retried_and_delivered_once_it_exists(tmux, run):
    tmux.agent("other", "w")   # the server runs; the session does not exist yet
    task_id = add(run, "later:w", "hello later")
    run_pass(run)
    first = log(run, task_id)
    assert [a["outcome"] for a in first] == ["retry"]
    assert "can't find" in first[0]["detail"]
    agent = tmux.agent("later", "w")
    # The retry is due 30 s later: run the next pass at that instant.
    run_pass(run, env={"ORCH_NOW": str(epoch(show(run, task_id)["not_before"]) + 1)})
    assert agent.wait_received(b"hello later\r") == b"hello later\r"
    # (sent, not delivered: a stand-in that draws nothing cannot show the note submitted)
    assert [a["outcome"] for a in log(run, task_id)] == ["retry", "sent"]


def test_no_server_running_is_logged_not_lost(run, tmp_path):
    task_id = add(run, "p:0", "x", env={"ORCH_TMUX_SOCKET": str(tmp_path / "nosuch")})
    run_pass(run)
    [attempt] = log(run, task_id)
    assert attempt["outcome"] == "retry" and "tmux server not running" in attempt["detail"]
    assert show(run, task_id)["status"] == "pending"


def test_never_types_into_a_bare_shell(tmux, run):
    target = tmux.shell("sh", "w")
    wait_until(lambda: tmux("list-panes", "-t", "=sh:=w", "-F",
                            "#{pane_current_command}").strip() == "sh", what="sh to start")
    task_id = add(run, target, "echo would-run-as-a-command")
    run_pass(run)
    [attempt] = log(run, task_id)
    assert attempt["outcome"] == "retry"
    assert attempt["detail"].startswith(f"no agent running in {target}")
    assert "would-run" not in tmux("capture-pane", "-p", "-t", "=sh:=w")
    assert show(run, task_id)["status"] == "pending"


def test_recurring_task_keeps_its_schedule_without_drift(tmux, run):
    agent = tmux.agent("rec", "w")
    task_id = add(run, "--every", "10m", agent.target, "tick",
                  env={"ORCH_NOW": "2026-11-25T20:00:00Z"})
    # Passes run late by varying amounts; the schedule stays on the 10-minute grid.
    for n, late in enumerate((0, 7, 61, 599), start=1):
        due = show(run, task_id)["due"]
        run_pass(run, env={"ORCH_NOW": str(epoch(due) + late)})
        wait_until(lambda n=n: agent.received().count(b"\r") >= n, what=f"delivery {n}")
    assert agent.wait_received(b"tick\r" * 4) == b"tick\r" * 4
    assert show(run, task_id)["due"] == "2026-11-25T20:40:00Z"
    assert [a["due"] for a in log(run, task_id)] == [
        "2026-11-25T20:00:00Z", "2026-11-25T20:10:00Z", "2026-11-25T20:20:00Z",
        "2026-11-25T20:30:00Z"]


def test_one_shot_is_delivered_once_only(tmux, run):
    agent = tmux.agent("once", "w")
    task_id = add(run, agent.target, "just once")
    run_pass(run)
    agent.wait_received(b"just once\r")
    run_pass(run)
    run_pass(run)
    assert agent.received() == b"just once\r"
    assert [a["outcome"] for a in log(run, task_id)] == ["sent"]


def test_future_task_is_not_delivered_early(tmux, run):
    agent = tmux.agent("future", "w")
    task_id = add(run, "--in", "10m", agent.target, "later")
    run_pass(run)
    assert show(run, task_id)["status"] == "pending" and log(run, task_id) == []
    assert agent.received() == b""


def test_concurrent_runs_never_interleave_in_one_pane(tmux, run):
    agent = tmux.agent("busy", "w")
    notes = [f"message number {i} " + "abcdefghij" * 20 for i in range(12)]
    for note in notes:
        add(run, agent.target, note)
    procs = [subprocess.Popen(["orch-sched", "run"]) for _ in range(4)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0, 0]
    got = agent.wait_received(b"".join(n.encode() + b"\r" for n in notes))
    assert sorted(got.split(b"\r")[:-1]) == sorted(n.encode() for n in notes)


def test_different_panes_are_typed_into_in_parallel(tmux, run, monkeypatch):
    monkeypatch.setenv("ORCH_ENTER_DELAY", "1.0")
    agents = [tmux.agent("par", f"w{i}") for i in range(6)]
    for a in agents:
        add(run, a.target, "hi")
    started = time.monotonic()
    run_pass(run)
    elapsed = time.monotonic() - started
    for a in agents:
        assert a.wait_received(b"hi\r") == b"hi\r"
    # One after another this would take at least 6 s (six Enter delays).
    assert elapsed < 5.5


def test_daemon_is_single_and_picks_up_new_tasks(tmux, run):
    agent = tmux.agent("dmn", "w")
    r = run("orch-sched", "daemon", "--detach")
    assert r.returncode == 0 and r.stdout.strip().isdigit(), r.stderr
    pid = int(r.stdout)
    again = run("orch-sched", "daemon", "--detach")
    assert again.returncode == 0 and int(again.stdout) == pid
    fg = run("orch-sched", "daemon")
    assert fg.returncode == 75 and f"pid {pid}" in fg.stderr
    add(run, agent.target, "picked up")
    assert agent.wait_received(b"picked up\r", timeout=5) == b"picked up\r"
    status = run("orch-sched", "status", "--json")
    assert status.returncode == 0
    assert json.loads(status.stdout)["pid"] == pid


def test_concurrent_detach_starts_one_daemon(run):
    results = []

    def detach():
        results.append(run("orch-sched", "daemon", "--detach"))

    threads = [threading.Thread(target=detach) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    assert all(r.stdout.strip().isdigit() for r in results)
    assert len({r.stdout.strip() for r in results}) == 1


def test_daemon_stops_on_sigterm(run):
    r = run("orch-sched", "daemon", "--detach")
    assert r.returncode == 0
    pid = int(r.stdout)
    os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not os.path.exists(f"/proc/{pid}") or
               open(f"/proc/{pid}/stat").read().split()[2] == "Z", what="daemon exit")
    status = run("orch-sched", "status", "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["daemon"] is False


def test_detached_daemon_leaves_the_working_directory_and_keeps_its_state(run, hermetic):
    # Started from a directory of its own (a worktree, say): it must not keep it busy.
    r = run("orch-sched", "daemon", "--detach", cwd=str(hermetic.parent))
    assert r.returncode == 0, r.stderr
    pid = int(r.stdout)
    assert os.readlink(f"/proc/{pid}/cwd") == "/"
    status = run("orch-sched", "status", "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["pid"] == pid


def test_one_pane_is_one_lock_however_the_socket_is_spelled(tmux, run, tmp_path, monkeypatch):
    # Another runner holds the pane's lock, reaching the server through a symlink.
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
    from orch import deliver, locks
    agent = tmux.agent("spell", "w")
    link = tmp_path / "link"
    link.symlink_to(os.path.dirname(tmux.socket))
    other = str(link / os.path.basename(tmux.socket))
    pane = tmux("list-panes", "-t", "=spell:=w", "-F", "#{pane_id}").strip()
    fd = locks.open_lock(deliver.pane_lock_name(other, pane))
    assert locks.acquire(fd, blocking=False)
    try:
        task_id = add(run, agent.target, "only once at a time")
        run_pass(run)
        # This runner's spelling differs, the pane does not: it leaves the pane alone.
        assert agent.received() == b"" and show(run, task_id)["status"] == "pending"
    finally:
        os.close(fd)
    run_pass(run)
    assert agent.wait_received(b"only once at a time\r") == b"only once at a time\r"
