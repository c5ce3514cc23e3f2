"""Delivery looks before it types: a stand-in agent that draws Claude Code's screen gets no byte
while a dialog, a busy turn or a person's draft is on it, and the note once after; a shell behind
a wrapper gets nothing; a program run by a waiting `bash -c` gets its check-ins."""

import json
import os
import signal
import sqlite3
import sys

from conftest import AGENT, wait_until
from orchsched import add, epoch, log, run_pass, show

T0 = epoch("2026-11-25T20:00:00+00:00")


def outcomes(run, task_id):
    return [a["outcome"] for a in log(run, task_id)]


def test_no_key_reaches_an_open_dialog_and_the_note_arrives_once_after(tmux, run):
    agent = tmux.agent("dlg", "w", layout="claude", mode="dialog")
    agent.wait_screen("Enter to confirm")
    task_id = add(run, agent.target, "check the build", t=T0)
    run_pass(run, T0)
    assert agent.received() == b""
    [deferred] = log(run, task_id)
    assert deferred["outcome"] == "deferred"
    assert deferred["detail"] == 'dialog open ("Enter to confirm · Esc to cancel")'
    task = show(run, task_id)
    assert (task["status"], task["attempts"], task["deferred"]) == ("pending", 0, "dialog")
    assert epoch(task["not_before"]) == T0 + 2       # looked at again shortly
    # Still open a while later: still nothing, and the log says it once.
    run_pass(run, T0 + 30)
    run_pass(run, T0 + 60)
    assert agent.received() == b""
    assert outcomes(run, task_id) == ["deferred"]
    assert epoch(show(run, task_id)["not_before"]) == T0 + 60 + 15   # backed off to 15 s
    agent.set_mode("idle", "? for shortcuts")
    run_pass(run, T0 + 90)
    assert agent.wait_received(b"check the build\r") == b"check the build\r"
    task = show(run, task_id)
    assert (task["status"], task["attempts"], task["deferred"]) == ("done", 1, None)
    assert outcomes(run, task_id) == ["deferred", "delivered"]


def test_a_person_s_draft_is_never_appended_to(tmux, run):
    agent = tmux.agent("drf", "w", layout="claude")
    tmux("send-keys", "-t", agent.target_exact(), "-l", "half a thought")
    agent.wait_screen("❯\u00a0half a thought")
    task_id = add(run, agent.target, "note from orch", t=T0)
    run_pass(run, T0)
    assert agent.received() == b"half a thought"
    assert log(run, task_id)[0]["detail"] == 'text in the input ("❯ half a thought")'
    tmux("send-keys", "-t", agent.target_exact(), "C-u")   # the person clears it
    wait_until(lambda: "half a thought" not in agent.screen(), what="the draft cleared")
    run_pass(run, T0 + 3)
    expected = b"half a thought\x15note from orch\r"
    assert agent.wait_received(expected) == expected
    assert outcomes(run, task_id) == ["deferred", "delivered"]


def test_a_note_put_back_is_never_overtaken_by_a_later_one(tmux, run):
    # The first note meets a draft and waits; the second was never tried, so by its
    # own time it could go first.  They go in the order they were due.
    agent = tmux.agent("ord", "w", layout="claude")
    tmux("send-keys", "-t", agent.target_exact(), "-l", "my draft")
    agent.wait_screen("❯\u00a0my draft")
    first = add(run, agent.target, "first note", t=T0)
    second = add(run, "--in", "1s", agent.target, "second note", t=T0)
    run_pass(run, T0 + 1)
    assert outcomes(run, first) == ["deferred"] and outcomes(run, second) == []
    # Past their grace, both wait on the pane: neither is called overdue.
    r = run("orch-sched", "status", "--json", env={"ORCH_NOW": str(T0 + 700)})
    got = json.loads(r.stdout)
    assert (r.returncode, got["overdue"], got["waiting"]) == (1, 0, 2)
    assert show(run, second)["reason"] == \
        f'behind check-in {first}: text in the input ("❯ my draft")'
    tmux("send-keys", "-t", agent.target_exact(), "C-u")
    wait_until(lambda: "my draft" not in agent.screen(), what="the draft cleared")
    run_pass(run, T0 + 4)
    expected = b"my draft\x15first note\rsecond note\r"
    assert agent.wait_received(expected) == expected
    assert (outcomes(run, first), outcomes(run, second)) == (["deferred", "delivered"],
                                                             ["delivered"])


def test_a_busy_agent_is_not_typed_into_until_it_is_idle(tmux, run):
    agent = tmux.agent("bsy", "w", layout="claude", mode="busy")
    task_id = add(run, agent.target, "next step", t=T0)
    run_pass(run, T0)
    assert agent.received() == b""
    assert log(run, task_id)[0]["detail"].startswith("agent busy (")
    assert show(run, task_id)["attempts"] == 0
    agent.set_mode("idle", "? for shortcuts")
    run_pass(run, T0 + 3)
    assert agent.wait_received(b"next step\r") == b"next step\r"


def test_a_deferral_longer_than_the_grace_needs_attention(tmux, run):
    agent = tmux.agent("att", "w", layout="claude", mode="dialog")
    agent.wait_screen("Esc to cancel")
    task_id = add(run, "--grace", "1m", agent.target, "waits for a person", t=T0)
    run_pass(run, T0)
    env = {"ORCH_NOW": str(T0 + 30)}
    r = run("orch-sched", "status", "--json", env=env)
    assert json.loads(r.stdout)["waiting"] == 0      # within its grace
    run_pass(run, T0 + 120)
    env = {"ORCH_NOW": str(T0 + 125)}
    r = run("orch-sched", "status", "--json", env=env)
    status = json.loads(r.stdout)
    assert r.returncode == 1 and status["waiting"] == 1 and status["healthy"] is False
    assert status["overdue"] == 0                    # waiting, not forgotten
    r = run("orch-dash", "--json", env=env)
    assert r.returncode == 1
    [reason] = [a for a in json.loads(r.stdout)["attention"] if a["kind"] == "waiting"]
    assert f"check-in {task_id} for att:w has waited" in reason["text"]
    assert "dialog open" in reason["text"]
    assert agent.received() == b""


def test_catch_up_applies_when_a_deferred_check_in_finally_goes(tmux, run):
    agent = tmux.agent("cup", "w", layout="claude", mode="busy")
    skip = add(run, "--catch-up", "skip", "--grace", "1m", agent.target, "skip me", t=T0)
    run_pass(run, T0)
    agent.set_mode("idle", "? for shortcuts")
    run_pass(run, T0 + 300)
    assert show(run, skip)["status"] == "missed"
    assert outcomes(run, skip) == ["deferred", "missed"]
    assert agent.received() == b""
    once = add(run, "--grace", "1m", agent.target, "late but once", t=T0 + 300)
    agent.set_mode("busy", "esc to interrupt")
    run_pass(run, T0 + 300)
    agent.set_mode("idle", "? for shortcuts")
    run_pass(run, T0 + 600)
    assert agent.wait_received(b"late but once\r") == b"late but once\r"
    assert log(run, once)[-1]["detail"].startswith("late by ")


def test_other_panes_are_typed_into_while_one_is_deferred(tmux, run):
    blocked = tmux.agent("mix", "a", layout="claude", mode="dialog")
    blocked.wait_screen("Esc to cancel")
    free = tmux.agent("mix", "b", layout="claude")
    first = add(run, blocked.target, "for the dialog pane", t=T0)
    second = add(run, free.target, "for the free pane", t=T0)
    run_pass(run, T0)
    assert free.wait_received(b"for the free pane\r") == b"for the free pane\r"
    assert blocked.received() == b""
    assert show(run, first)["status"] == "pending" and show(run, second)["status"] == "done"


def shell_pane(tmux, name, command):
    tmux._spawn(name, "w", command)
    return f"{name}:w"


def test_a_shell_behind_script_or_env_is_refused(tmux, run, tmp_path):
    marker = tmp_path / "ran"
    for name, command in (("scr", "script -q -c bash /dev/null"), ("env", "env bash"),
                          ("sud", "nice env bash")):
        target = shell_pane(tmux, name, command)
        wait_until(lambda t=target: "$" in tmux("capture-pane", "-p", "-t", f"={t}")
                   or "#" in tmux("capture-pane", "-p", "-t", f"={t}"),
                   what=f"{command} to show its prompt")
        task_id = add(run, target, f"touch {marker}")
        run_pass(run)
        [attempt] = log(run, task_id)
        assert attempt["outcome"] == "retry", command
        assert attempt["detail"].startswith(f"no agent running in {target} (the pane runs bash")
        r = run("orch-sched", "check", "--json", target)
        assert r.returncode == 1 and json.loads(r.stdout)["state"] == "shell"
    assert not marker.exists()


def test_an_agent_run_by_a_waiting_bash_c_gets_its_check_ins(tmux, run, tmp_path):
    record = tmp_path / "rec"
    command = (f"bash -c 'cd {tmp_path} && {sys.executable} {AGENT} {record}; exec bash'")
    target = shell_pane(tmux, "bc", command)
    wait_until(record.exists, what="the agent to start")
    # tmux names the pane's foreground group after its leader: bash.
    assert tmux("display-message", "-p", "-t", "=bc:=w", "#{pane_current_command}").strip() \
        == "bash"
    task_id = add(run, target, "hello through bash -c")
    run_pass(run)
    wait_until(lambda: record.read_bytes() == b"hello through bash -c\r", what="the note")
    assert show(run, task_id)["status"] == "done"
    # Once the agent is gone, the same pane is a bare shell: refused.
    shell = int(tmux("display-message", "-p", "-t", "=bc:=w", "#{pane_pid}"))
    with open(f"/proc/{shell}/task/{shell}/children") as f:
        [agent_pid] = [int(p) for p in f.read().split()]
    os.kill(agent_pid, signal.SIGTERM)
    wait_until(lambda: run("orch-sched", "check", "--json", target).returncode == 1
               and json.loads(run("orch-sched", "check", "--json", target).stdout)["state"]
               == "shell", what="the exec'd shell")


def test_orch_agent_commands_is_an_allow_list(tmux, run, monkeypatch):
    agent = tmux.agent("allow", "w")      # the stand-in runs as python3
    monkeypatch.setenv("ORCH_AGENT_COMMANDS", "claude,codex")
    refused = add(run, agent.target, "not for python")
    run_pass(run)
    [attempt] = log(run, refused)
    assert attempt["outcome"] == "retry" and "not one of ORCH_AGENT_COMMANDS" in attempt["detail"]
    command = os.path.basename(sys.executable)[:15]   # what the kernel calls it
    monkeypatch.setenv("ORCH_AGENT_COMMANDS", f"claude {command}")
    add(run, agent.target, "for python now")
    run_pass(run)
    assert agent.wait_received(b"for python now\r") == b"for python now\r"


def test_a_stored_note_with_a_control_character_fails_and_is_never_typed(tmux, run, hermetic):
    agent = tmux.agent("ctl", "w")
    task_id = add(run, agent.target, "placeholder")
    # An older orch stored whatever it was given.
    db = sqlite3.connect(hermetic / "orch.db")
    with db:
        db.execute("UPDATE tasks SET note = ? WHERE id = ?", ("hi\x1b[201~\x1b[Z", task_id))
    db.close()
    run_pass(run)
    task = show(run, task_id)
    assert task["status"] == "failed" and "ESC (U+001B), at character 3" in task["reason"]
    assert outcomes(run, task_id) == ["refused", "failed"]
    assert agent.received() == b""


def test_a_shell_with_a_background_job_of_its_own_group_is_still_a_shell(tmux, run, tmp_path):
    # Started before job control (from an rc file), the job shares the shell's group.
    rc = tmp_path / "rc"
    rc.write_text("sleep 600 &\nPS1='ready$ '\n")
    target = shell_pane(tmux, "bg", f"bash --rcfile {rc} -i")
    wait_until(lambda: "ready$" in tmux("capture-pane", "-p", "-t", "=bg:=w"), what="prompt")
    task_id = add(run, target, f"touch {tmp_path / 'ran'}")
    run_pass(run)
    [attempt] = log(run, task_id)
    assert attempt["outcome"] == "retry" and "at its prompt" in attempt["detail"]
    assert not (tmp_path / "ran").exists()


def test_a_shell_on_a_terminal_of_a_program_s_own_is_a_shell(tmux, run, tmp_path):
    spawn = f"{sys.executable} -c 'import pty; pty.spawn([\"bash\", \"--norc\"])'"
    target = shell_pane(tmux, "pty", spawn)
    wait_until(lambda: "bash-" in tmux("capture-pane", "-p", "-t", "=pty:=w"), what="prompt")
    r = run("orch-sched", "check", "--json", target)
    assert r.returncode == 1 and json.loads(r.stdout)["state"] == "shell"


def test_a_dead_pane_is_never_typed_into(tmux, run):
    tmux.agent("live", "w")                 # the server, and a session to keep it up
    tmux("set", "-g", "remain-on-exit", "on")
    tmux("new-window", "-d", "-t", "=live:", "-n", "dead", "true")
    wait_until(lambda: tmux("list-panes", "-t", "=live:=dead", "-F", "#{pane_dead}").strip()
               == "1", what="the pane to die")
    task_id = add(run, "live:dead", "into a dead pane")
    run_pass(run)
    [attempt] = log(run, task_id)
    assert attempt["outcome"] == "retry" and "is dead" in attempt["detail"]
    r = run("orch-sched", "check", "live:dead")
    assert r.returncode == 69 and "is dead" in r.stderr
    assert tmux("list-sessions", "-F", "#{session_name}").split() == ["live"]   # still up


def test_cancel_ends_a_deferral(tmux, run):
    agent = tmux.agent("cnc", "w", layout="claude", mode="busy")
    task_id = add(run, agent.target, "never mind", t=T0)
    run_pass(run, T0)
    assert show(run, task_id)["deferred"] == "busy"
    assert run("orch-sched", "cancel", str(task_id)).returncode == 0
    task = show(run, task_id)
    assert (task["status"], task["deferred"], task["deferred_since"]) == ("cancelled", None, None)


def test_the_dashboard_tells_delivered_from_sent_and_shows_deferrals(tmux, run):
    readable = tmux.agent("dsh", "a", layout="claude")
    blank = tmux.agent("dsh", "b")
    busy = tmux.agent("dsh", "c", layout="claude", mode="busy")
    for agent in (readable, blank, busy):
        add(run, agent.target, f"for {agent.target}", t=T0)
    run_pass(run, T0)
    env = {"ORCH_NOW": str(T0 + 1)}
    r = run("orch-dash", "--json", env=env)
    checkins = json.loads(r.stdout)["checkins"]
    assert checkins["outcomes"] == {"delivered": 1, "sent": 1, "deferred": 1}
    [row] = [x for x in checkins["next"] if x["target"] == busy.target]
    assert row["deferred"] == "busy"
    r = run("orch-dash", env=env)
    assert "24 h: 1 delivered, 1 unconfirmed" in r.stdout
    assert any(line.split()[:2] == ["deferred", "dsh:c"] for line in r.stdout.splitlines())
