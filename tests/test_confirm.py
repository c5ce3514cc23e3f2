"""Delivered means submitted: after its Enter a check-in is looked for on screen; a lost Enter
gets one more, a note left in the input is pressed Enter on later, never typed again; a runner
that died between the paste and the Enter, or after it, costs no duplicate and no merge."""

import os
import signal
import subprocess
import sys

from conftest import wait_until
from orchsched import add, epoch, log, run_pass, show

LIB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib")
T0 = epoch("2026-11-25T20:00:00+00:00")


def outcomes(run, task_id):
    return [a["outcome"] for a in log(run, task_id)]


def history(agent):
    """The prompts the stand-in took, as its screen shows them."""
    return [line[2:] for line in agent.screen().split("\n") if line.startswith("❯ ")]


def test_an_enter_lost_after_the_paste_gets_a_second_one(tmux, run, monkeypatch):
    monkeypatch.setenv("ORCH_ENTER_DELAY", "0.2")
    agent = tmux.agent("lost", "w", layout="claude", options="--drop-enter-within 0.3")
    task_id = add(run, agent.target, "submitted by the second Enter")
    run_pass(run)
    assert history(agent) == ["submitted by the second Enter"]
    assert agent.received() == b"submitted by the second Enter\r\r"
    [attempt] = log(run, task_id)
    assert attempt["outcome"] == "delivered" and attempt["detail"].startswith("seen submitted")
    assert show(run, task_id)["status"] == "done"


def test_a_note_that_will_not_submit_is_unsubmitted_and_never_typed_again(tmux, run):
    agent = tmux.agent("stuck", "w", layout="claude", options="--no-enter")
    task_id = add(run, agent.target, "stays in the input", t=T0)
    run_pass(run, T0)
    task = show(run, task_id)
    assert outcomes(run, task_id) == ["unsubmitted"]
    assert (task["status"], task["attempts"]) == ("pending", 1)
    run_pass(run, epoch(task["not_before"]) + 1)       # the retry: Enter only
    assert outcomes(run, task_id) == ["unsubmitted", "unsubmitted"]
    assert agent.received().count(b"stays in the input") == 1
    assert agent.screen().count("stays in the input") == 1
    assert history(agent) == []


def test_a_blank_screen_is_sent_not_delivered(tmux, run):
    agent = tmux.agent("blank", "w")
    task_id = add(run, agent.target, "into the unknown")
    run_pass(run)
    assert agent.wait_received(b"into the unknown\r") == b"into the unknown\r"
    assert outcomes(run, task_id) == ["sent"] and show(run, task_id)["status"] == "done"


def claim_and_die(agent, t, then):
    """A runner claims AGENT's check-in at T, records that it types, does THEN to the pane
    (as a dying runner would have), and is killed."""
    code = (f"import os, sys, time; sys.path.insert(0, {LIB!r})\n"
            "from orch import store, tasks, tmux\n"
            "conn = store.connect()\n"
            f"task, _ = tasks.claim(conn, {os.environ['ORCH_TMUX_SOCKET']!r}, {agent.target!r},"
            f" now={t})\n"
            f"tasks.typing(conn, [task], now={t})\n"
            "print(task['note'], flush=True)\n"
            "time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    note = proc.stdout.readline().rstrip("\n")
    then(note)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_a_runner_killed_between_paste_and_enter_costs_no_duplicate(tmux, run):
    agents = [tmux.agent("crash", f"w{i}", layout="claude") for i in range(30)]
    ids = [add(run, a.target, f"FIRST-{i}-", t=T0) for i, a in enumerate(agents)]
    for i, agent in enumerate(agents):
        add(run, agent.target, f"SECOND-{i}-", t=T0 + 1)
    # A real runner pastes into all 30 panes, then dies during its Enter delay.
    runner = subprocess.Popen(["orch-sched", "run"],
                              env=dict(os.environ, ORCH_ENTER_DELAY="30", ORCH_NOW=str(T0 + 2)))
    try:
        for i, agent in enumerate(agents):
            agent.wait_screen(f"❯\u00a0FIRST-{i}-")
    finally:
        runner.send_signal(signal.SIGKILL)
        runner.wait()
    assert all(b"\r" not in a.received() for a in agents)
    run_pass(run, T0 + 3)            # the panes are free: their claims are taken over at once
    run_pass(run, T0 + 6)
    for i, agent in enumerate(agents):
        assert history(agent) == [f"FIRST-{i}-", f"SECOND-{i}-"], agent.target
        assert agent.received().count(f"FIRST-{i}-".encode()) == 1
    for task_id in ids:
        assert outcomes(run, task_id) == ["expired", "delivered"]


def test_a_runner_killed_after_the_enter_is_not_typed_again(tmux, run):
    agent = tmux.agent("after", "w", layout="claude")
    task_id = add(run, agent.target, "went in before the crash", t=T0)

    def submit(note):
        tmux("send-keys", "-t", agent.target_exact(), "-l", note)
        tmux("send-keys", "-t", agent.target_exact(), "Enter")
        wait_until(lambda: history(agent) == [note], what="the note submitted")

    claim_and_die(agent, T0, submit)
    run_pass(run, T0 + 61)
    assert history(agent) == ["went in before the crash"]
    assert agent.received() == b"went in before the crash\r"
    assert outcomes(run, task_id) == ["expired", "recovered"]
    assert show(run, task_id)["status"] == "done"


def test_held_check_ins_wait_until_the_agent_has_taken_up_its_resume(tmux, run):
    agent = tmux.agent("rsm", "w", layout="claude", mode="limited",
                       options="--busy-after-submit 1.5")
    agent.wait_screen("You've hit your limit")
    held = add(run, "--account", "acct", agent.target, "the held check-in", t=T0)
    run_pass(run, T0)
    assert outcomes(run, held) == ["held"] and agent.received() == b""
    agent.set_mode("idle", "? for shortcuts")
    after = T0 + 63 * 60                      # past the reset (21:00) and its margin
    run_pass(run, after)
    resume = "Usage limit has reset. Please continue where you left off."
    assert history(agent) == [resume]
    # The agent took up the resume and is working on it: the held check-in waits.
    assert outcomes(run, held) == ["held", "deferred"]
    assert log(run, held)[-1]["detail"].startswith("agent busy")
    agent.wait_screen("? for shortcuts")
    run_pass(run, after + 3)
    assert history(agent) == [resume, "the held check-in"]
    assert outcomes(run, held) == ["held", "deferred", "delivered"]


def test_a_pane_slow_to_settle_holds_up_no_other_pane(tmux, run):
    # The stuck pane's note is looked at for CONFIRM_AT's 2 s before it is called
    # unsubmitted; meanwhile the other pane takes its three check-ins one by one.
    stuck = tmux.agent("pace", "stuck", layout="claude", options="--no-enter")
    fast = tmux.agent("pace", "fast", layout="claude")
    slow_id = add(run, stuck.target, "never submitted")
    fast_ids = [add(run, fast.target, f"quick {k}") for k in range(3)]
    run_pass(run)
    assert history(fast) == ["quick 0", "quick 1", "quick 2"]
    order = [(a["task"], a["outcome"]) for a in log(run)]  # as logged, oldest first
    assert order == [*((i, "delivered") for i in fast_ids), (slow_id, "unsubmitted")]
