"""schedule_with_note.sh: the original script's arguments, output and note file, on orch-sched."""

import json
import os
import re
import shutil
import subprocess

import pytest

SCRIPT = "schedule_with_note.sh"


def script(*args, env=None, cwd=None):
    full = dict(os.environ)
    full.update(env or {})
    return subprocess.run([shutil.which(SCRIPT), *args], capture_output=True, text=True,
                          env=full, cwd=cwd, stdin=subprocess.DEVNULL)


def tasks(run):
    r = run("orch-sched", "list", "--json", "--all")
    assert r.returncode == 0
    return json.loads(r.stdout)


def test_prints_the_original_lines_and_stores_the_check_in(run, hermetic):
    r = script("30", "Check project status", "project-impl:0")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    [task] = tasks(run)
    assert lines[0] == "Scheduling check in 30 minutes with note: Check project status"
    assert str(task["id"]) in lines[1] and "project-impl:0" in lines[1]
    assert re.fullmatch(r"SCHEDULED TO RUN AT: \d\d:\d\d:\d\d \(in 30 minutes from "
                        r"\d\d:\d\d:\d\d\)", lines[2])
    assert len(lines) == 3
    assert task["note"] == "SCHEDULED CHECK-IN: Check project status"
    assert task["target"] == "project-impl:0" and task["every_s"] is None
    note_file = (hermetic / "next_check_note.txt").read_text()
    header, scheduled, blank, note = note_file.split("\n")[:4]
    assert re.fullmatch(r"=== Next Check Note \(.+\) ===", header)
    assert (scheduled, blank, note) == ("Scheduled for: 30 minutes", "", "Check project status")
    assert note_file.count("\n") == 4


def test_defaults_and_environment(run, tmp_path):
    note_file = tmp_path / "notes" / "n.txt"
    note_file.parent.mkdir()
    r = script(env={"ORCH_NOTE_FILE": str(note_file)})
    assert r.returncode == 0, r.stderr
    r = script("0.5", "x", env={"ORCH_DEFAULT_TARGET": "team:2"})
    assert r.returncode == 0, r.stderr
    first, second = sorted(tasks(run), key=lambda t: t["id"])
    assert first["target"] == "tmux-orc:0"
    assert first["note"] == "SCHEDULED CHECK-IN: Standard check-in"
    assert second["target"] == "team:2"
    assert "Scheduled for: 3 minutes" in note_file.read_text()


def test_an_empty_minutes_means_the_default_three(run):
    r = script("", "note", "p:0", env={"ORCH_NOW": "2026-11-25T20:00:00Z"})
    assert r.returncode == 0, r.stderr
    assert tasks(run)[0]["due"] == "2026-11-25T20:03:00Z"


def test_due_time_honours_fractional_minutes(run):
    r = script("0.5", "half a minute", "p:0", env={"ORCH_NOW": "2026-11-25T20:00:00Z"})
    assert r.returncode == 0, r.stderr
    assert tasks(run)[0]["due"] == "2026-11-25T20:00:30Z"


@pytest.mark.parametrize("minutes", ["abc", "-5", "1.2.3", ".", "5m"])
def test_bad_minutes_exit_65_and_store_nothing(run, minutes):
    r = script(minutes, "note", "p:0")
    assert r.returncode == 65 and r.stderr.startswith("schedule_with_note.sh: error: bad MINUTES")
    assert r.stdout == "" and tasks(run) == []


@pytest.mark.parametrize("target", ["-t", "a:b:c", "bad\ntarget"])
def test_bad_target_exits_65_and_stores_nothing(run, target):
    r = script("5", "note", target)
    assert r.returncode == 65, r.stderr
    assert "error" in r.stderr and r.stdout == "" and tasks(run) == []


def test_note_is_kept_literally(run):
    note = "-n $(whoami) `id` 'q' \"dq\" ; C-c"
    r = script("1", note, "p:0")
    assert r.returncode == 0, r.stderr
    assert tasks(run)[0]["note"] == f"SCHEDULED CHECK-IN: {note}"
    assert f"with note: {note}" in r.stdout


def test_store_failure_exits_non_zero(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    r = script("1", "x", "p:0", env={"ORCH_HOME": str(blocker / "state")})
    assert r.returncode == 73 and "orch-sched: error" in r.stderr
    assert "Scheduling" not in r.stdout


def test_autostarts_one_daemon_which_delivers(tmux, run):
    agent = tmux.agent("tmux-orc", "0")
    r = script("0", "Check status", "tmux-orc:0", env={"ORCH_NO_AUTOSTART": "0"})
    assert r.returncode == 0, r.stderr
    expected = b"SCHEDULED CHECK-IN: Check status\r"
    assert agent.wait_received(expected) == expected
    r2 = script("10", "second", "tmux-orc:0", env={"ORCH_NO_AUTOSTART": "0"})
    assert r2.returncode == 0
    status = run("orch-sched", "status", "--json")
    pid = json.loads(status.stdout)["pid"]
    assert status.returncode == 0 and pid
    daemons = [p for p in os.listdir("/proc") if p.isdigit() and _is_our_daemon(p)]
    assert daemons == [str(pid)]


def _is_our_daemon(pid):
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = f.read().split(b"\0")
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read()
    except OSError:
        return False
    return b"daemon" in cmd and f"ORCH_HOME={os.environ['ORCH_HOME']}".encode() in env


def test_no_autostart_when_asked(run):
    r = script("1", "x", "p:0", env={"ORCH_NO_AUTOSTART": "1"})
    assert r.returncode == 0
    status = run("orch-sched", "status", "--json")
    assert status.returncode == 1 and json.loads(status.stdout)["daemon"] is False


def test_an_unwritable_note_file_is_one_warning_and_the_check_in_stands(run, tmp_path):
    r = script("1", "x", "p:0", env={"ORCH_NOTE_FILE": str(tmp_path / "no" / "dir" / "f")})
    assert r.returncode == 0
    assert r.stderr.splitlines()[1:] == [
        f"schedule_with_note.sh: warning: could not write {tmp_path}/no/dir/f "
        "(the check-in is scheduled)"]
    # (The first line says that no tmux server runs p:0 now.)
    assert r.stderr.startswith("orch-sched: warning: p:0: tmux server not running")
    assert len(tasks(run)) == 1



def test_a_note_with_a_control_character_exits_65_and_stores_nothing(run):
    r = script("1", "hi\x1b[Z", "p:0")
    assert r.returncode == 65 and "control character, ESC (U+001B)" in r.stderr
    assert tasks(run) == []


def test_a_missing_target_is_warned_of_and_still_stored(tmux, run):
    tmux.agent("real", "w")
    r = script("1", "x", "nosuch:0", env={"ORCH_NO_AUTOSTART": "1"})
    assert r.returncode == 0
    assert r.stderr.splitlines() == [
        "orch-sched: warning: nosuch:0: can't find session: nosuch (the check-in is stored and "
        "will be tried when due)"]
    assert [t["target"] for t in tasks(run)] == ["nosuch:0"]
    ok = script("1", "x", "real:w", env={"ORCH_NO_AUTOSTART": "1"})
    assert ok.returncode == 0 and ok.stderr == ""


def test_the_seed_s_default_session_and_window_are_the_default_target(tmux, run):
    agent = tmux.agent("seeded", "w")
    seed = {"TMO_DEFAULT_SESSION": "seeded", "TMO_DEFAULT_WINDOW": "w"}
    r = script("0", "from the seed's settings", env=seed)
    assert r.returncode == 0, r.stderr
    assert "orch-sched task" in r.stdout and "for seeded:w" in r.stdout
    assert run("orch-sched", "run").returncode == 0
    expected = b"SCHEDULED CHECK-IN: from the seed's settings\r"
    assert agent.wait_received(expected) == expected
    # ORCH_DEFAULT_TARGET comes first; only the session set means its window 0.
    r = script("5", "x", env=dict(seed, ORCH_DEFAULT_TARGET="team:2"))
    assert r.returncode == 0, r.stderr
    r = script("5", "y", env={"TMO_DEFAULT_SESSION": "seeded"})
    assert r.returncode == 0, r.stderr
    targets = [t["target"] for t in sorted(tasks(run), key=lambda t: t["id"])]
    assert targets == ["seeded:w", "team:2", "seeded:0"]
