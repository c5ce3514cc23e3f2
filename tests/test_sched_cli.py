"""orch-sched's command-line contract: output shapes and every documented exit status."""

import json
import os
import shutil
import sqlite3
import stat
import sys

import pytest

NOW = "2026-11-25T20:00:00Z"
NOW_EPOCH = 1795636800.0


def add(run, *args, **kw):
    r = run("orch-sched", "add", *args, **kw)
    assert r.returncode == 0, r.stderr
    # These tests run no tmux server: the only thing on stderr is the warning
    # that the target is not there now (test_missing_target_warnings).
    assert r.stdout.strip().isdigit()
    assert r.stderr == "" or (r.stderr.startswith("orch-sched: warning: ")
                              and "tmux server not running" in r.stderr
                              and r.stderr.count("\n") == 1), r.stderr
    return int(r.stdout)


def tasks_json(run, *args):
    r = run("orch-sched", "list", "--json", *args)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_add_prints_only_the_id_and_stores_the_note_verbatim(run):
    first = add(run, "proj:0", "hello")
    second = add(run, "--in", "5", "proj:0", "-n", "--in", "3", "-h", "$(rm", "-rf)", "x;")
    assert second == first + 1
    [_, task] = tasks_json(run)
    assert task["note"] == "-n --in 3 -h $(rm -rf) x;"
    assert task["target"] == "proj:0" and task["status"] == "pending"


def test_due_times_from_in_and_at(run):
    env = {"ORCH_NOW": NOW}
    add(run, "--in", "90s", "p:0", "a", env=env)
    add(run, "--in", "0.5", "p:0", "b", env=env)
    add(run, "--in", "1h30m", "p:0", "c", env=env)
    add(run, "--at", "2026-11-26T08:00:00Z", "p:0", "d", env=env)
    add(run, "--at", "19:30", "p:0", "e", env=env)      # passed today (TZ=UTC): tomorrow
    add(run, "--at", "21:15:30", "p:0", "f", env=env)
    due = {t["note"]: t["due"] for t in tasks_json(run)}
    assert due == {"a": "2026-11-25T20:01:30Z", "b": "2026-11-25T20:00:30Z",
                   "c": "2026-11-25T21:30:00Z", "d": "2026-11-26T08:00:00Z",
                   "e": "2026-11-26T19:30:00Z", "f": "2026-11-25T21:15:30Z"}


def test_note_from_stdin_keeps_newlines_and_drops_the_final_one(run):
    add(run, "p:0", "-", stdin="line one\n  line 'two'\n\n")
    [task] = tasks_json(run)
    assert task["note"] == "line one\n  line 'two'"


def test_key_updates_the_live_task_in_place(run):
    env = {"ORCH_NOW": NOW}
    a = add(run, "--key", "build", "--in", "5", "p:0", "first", env=env)
    b = add(run, "--key", "build", "--in", "10", "p:0", "second", env=env)
    assert a == b
    [task] = tasks_json(run)
    assert (task["note"], task["due"], task["key"]) == ("second", "2026-11-25T20:10:00Z", "build")


@pytest.mark.parametrize("args", [
    ["--in", "5x", "p:0", "n"], ["--in", "-5", "p:0", "n"], ["--in", "1m1h", "p:0", "n"],
    ["--at", "25:00", "p:0", "n"], ["--at", "tomorrow", "p:0", "n"],
    ["--every", "0", "p:0", "n"], ["--retries", "x", "p:0", "n"],
    ["--catch-up", "always", "p:0", "n"], ["a:b:c", "n"], ["a:0.x", "n"], ["a\nb", "n"],
    [" p:0", "n"], ["p:0", ""], ["p:0", " ", " "], ["--key", "a\tb", "p:0", "n"],
])
def test_bad_values_exit_65_and_store_nothing(run, args):
    r = run("orch-sched", "add", *args)
    assert r.returncode == 65, r.stderr
    assert r.stdout == "" and r.stderr.startswith("orch-sched: error: ")
    assert len(r.stderr.strip().splitlines()) == 1
    assert tasks_json(run, "--all") == []


def test_nul_and_bad_utf8_on_stdin_exit_65(run):
    for data in ("a\x00b", b"\xff\xfe"):
        r = run("orch-sched", "add", "p:0", "-", stdin=data)
        assert r.returncode == 65 and b"error" in r.stderr if isinstance(data, bytes) \
            else r.returncode == 65 and "error" in r.stderr
    assert tasks_json(run, "--all") == []


@pytest.mark.parametrize("args", [[], ["add"], ["add", "p:0"], ["frobnicate"], ["list", "--bogus"],
                                  ["list", "--json", "--porcelain"], ["cancel"]])
def test_unparseable_command_lines_exit_64_with_usage(run, args):
    r = run("orch-sched", *args)
    assert r.returncode == 64
    assert r.stderr.startswith("orch-sched: error: the command line does not parse")
    assert "Usage:" in r.stderr and r.stdout == ""


def test_help_and_version_go_to_stdout(run):
    r = run("orch-sched", "--help")
    assert r.returncode == 0 and r.stdout.startswith("orch-sched:") and "Usage:" in r.stdout
    r = run("orch-sched", "--version")
    assert r.returncode == 0 and r.stdout.startswith("orch-sched ")


def test_list_porcelain_columns(run):
    env = {"ORCH_NOW": NOW}
    a = add(run, "--every", "30m", "--key", "k", "--account", "acct", "p:1", "tab\there", env=env)
    r = run("orch-sched", "list", "--porcelain")
    assert r.returncode == 0
    assert r.stdout == f"{a}\tpending\t2026-11-25T20:00:00Z\tp:1\t1800\t0\tacct\tk\ttab\\there\n"


def test_list_table_fits_80_columns_and_truncates_the_note(run):
    add(run, "a-very-long-session-name-indeed:window", "x" * 300)
    r = run("orch-sched", "list")
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["ID", "TARGET", "DUE", "EVERY", "STATUS", "TRIES", "NOTE"]
    assert all(len(line) <= 80 for line in lines) and "…" in lines[1]


def test_show_prints_every_field_and_the_whole_note(run):
    note = "y" * 500 + "\nsecond line"
    a = add(run, "p:0", "-", stdin=note)
    r = run("orch-sched", "show", str(a))
    assert r.returncode == 0
    assert note in r.stdout and "status: pending" in r.stdout and "target: p:0" in r.stdout
    r = run("orch-sched", "show", str(a), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["note"] == note


def test_show_unknown_and_bad_ids(run):
    assert run("orch-sched", "show", "42").returncode == 1
    assert run("orch-sched", "show", "x1").returncode == 65


def test_cancel_reports_each_refused_id_and_cancels_the_rest(run):
    a = add(run, "p:0", "one")
    b = add(run, "p:0", "two")
    r = run("orch-sched", "cancel", str(a), "99", str(b))
    assert r.returncode == 1
    assert "task 99 is unknown" in r.stderr and str(a) not in r.stderr
    assert {t["status"] for t in tasks_json(run, "--all")} == {"cancelled"}
    r = run("orch-sched", "cancel", str(a))
    assert r.returncode == 1 and "already finished" in r.stderr
    r = run("orch-sched", "cancel", "1", "two")
    assert r.returncode == 65
    assert tasks_json(run, "--status", "cancelled")[0]["id"] == a


def test_list_filters_by_status(run):
    a = add(run, "p:0", "one")
    add(run, "p:0", "two")
    assert run("orch-sched", "cancel", str(a)).returncode == 0
    assert [t["note"] for t in tasks_json(run)] == ["two"]
    assert [t["note"] for t in tasks_json(run, "--status", "cancelled")] == ["one"]
    assert len(tasks_json(run, "--all")) == 2
    r = run("orch-sched", "list", "--status", "nope")
    assert r.returncode == 65


def test_state_directory_is_private_and_independent_of_cwd(run, tmp_path, hermetic):
    other = tmp_path / "elsewhere"
    other.mkdir()
    add(run, "p:0", "x", cwd=str(other))
    assert list(other.iterdir()) == []
    assert stat.S_IMODE(os.stat(hermetic).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(hermetic / "orch.db").st_mode) == 0o600


def test_default_state_directory_follows_xdg(run, tmp_path):
    env = {"ORCH_HOME": "", "XDG_STATE_HOME": str(tmp_path / "xdg")}
    add(run, "p:0", "x", env=env)
    assert (tmp_path / "xdg" / "orch" / "orch.db").exists()


def test_state_directory_that_cannot_be_created_exits_73(run, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    r = run("orch-sched", "add", "p:0", "x", env={"ORCH_HOME": str(blocker / "state")})
    assert r.returncode == 73 and r.stderr.startswith("orch-sched: error: ")


def test_database_symlink_is_refused(run, hermetic, tmp_path):
    hermetic.mkdir()
    target = tmp_path / "elsewhere.db"
    os.symlink(target, hermetic / "orch.db")
    r = run("orch-sched", "add", "p:0", "x")
    assert r.returncode == 74 and "symbolic link" in r.stderr
    assert not target.exists()


def test_corrupt_database_is_reported_and_left_untouched(run, hermetic):
    hermetic.mkdir()
    junk = b"this is not a database, but it is the user's file\n" * 100
    (hermetic / "orch.db").write_bytes(junk)
    for args in (["add", "p:0", "x"], ["list"], ["run"], ["status"]):
        r = run("orch-sched", *args)
        assert r.returncode == 74, (args, r.stderr)
        assert "cannot be read" in r.stderr and len(r.stderr.splitlines()) == 1
    assert (hermetic / "orch.db").read_bytes() == junk


def test_locked_database_exits_75_after_the_busy_timeout(run, hermetic):
    add(run, "p:0", "x")
    holder = sqlite3.connect(hermetic / "orch.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        r = run("orch-sched", "add", "p:0", "y")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert r.returncode == 75 and "busy" in r.stderr
    assert [t["note"] for t in tasks_json(run)] == ["x"]


def test_run_without_tmux_on_path_exits_69(run, tmp_path):
    add(run, "p:0", "x")
    bare = tmp_path / "bin"
    bare.mkdir()
    # Only the interpreter's directory (no tmux there) and an empty one on PATH.
    interpreter_dir = os.path.dirname(os.path.realpath(sys.executable))
    r = run(shutil.which("orch-sched"), "run", env={"PATH": f"{interpreter_dir}:{bare}"})
    assert r.returncode == 69 and "tmux is not installed" in r.stderr


def test_closed_stdout_pipe_is_silent(run, hermetic):
    add(run, "p:0", "first")
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
    from orch import store, tasks
    conn = store.connect()
    for i in range(2000):   # far more output than a pipe holds
        tasks.add(conn, "p:0", "/tmp/none", f"note {i} " + "x" * 100, 2e9 + i)
    conn.close()
    import subprocess
    for fmt in ("--porcelain", "--json", ""):
        # `true` closes the pipe at once, long before orch-sched writes to it.
        proc = subprocess.run(f"orch-sched list {fmt} | true; echo ${{PIPESTATUS[0]}}",
                              shell=True, executable="/bin/bash", capture_output=True, text=True)
        assert proc.stdout.strip() == "141" and proc.stderr == "", fmt


@pytest.mark.parametrize("args", [
    ["--in", "99999999999999999999", "p:0", "n"], ["--in", "9" * 400, "p:0", "n"],
    ["--at", "99999999999999999999", "p:0", "n"], ["--at", "0001-01-01T00:00:00", "p:0", "n"],
    ["--every", "9" * 400, "p:0", "n"], ["--every", "0.0000001s", "p:0", "n"],
    ["--grace", "9" * 400, "p:0", "n"], ["--retries", "99999999999999999999", "p:0", "n"],
    ["--retries", "٣", "p:0", "n"],
])
def test_out_of_range_values_exit_65_and_store_nothing(run, args):
    r = run("orch-sched", "add", *args)
    assert r.returncode == 65 and r.stderr.startswith("orch-sched: error: ")
    assert tasks_json(run, "--all") == []


@pytest.mark.parametrize("now", ["99999999999999999999", "0001-01-01T00:00:00", "soon"])
def test_bad_orch_now_exits_65(run, now):
    r = run("orch-sched", "list", env={"ORCH_NOW": now})
    assert r.returncode == 65 and r.stderr.startswith("orch-sched: error: ORCH_NOW")


@pytest.mark.parametrize("args", [["show", "99999999999999999999"], ["cancel", "-1"],
                                  ["show", "١"], ["show", " 1"], ["log", "--limit", "0"],
                                  ["limits", "set", "a", "--until", "0"]])
def test_bad_numbers_exit_65(run, args):
    r = run("orch-sched", *args)
    assert r.returncode == 65 and len(r.stderr.splitlines()) == 1


def test_arguments_that_are_not_utf8_exit_65(run, tmp_path):
    # argv bytes that are not UTF-8 reach Python as lone surrogates.
    bad = os.fsdecode(b"s\xff")
    for args in (["add", f"{bad}:0", "x"], ["add", "p:0", bad], ["add", "--key", bad, "p:0", "x"],
                 ["limits", "clear", bad]):
        r = run("orch-sched", *args)
        assert r.returncode == 65 and "not valid UTF-8" in r.stderr, args
    r = run("orch-sched", "add", "p:0", "x", env={"ORCH_TMUX_SOCKET": bad})
    assert r.returncode == 65
    assert tasks_json(run, "--all") == []


def test_tables_never_send_control_characters_to_the_terminal(run, hermetic):
    # add refuses such a note now; a database written before that may hold one.
    add(run, "p:0", "placeholder")
    db = sqlite3.connect(hermetic / "orch.db")
    with db:
        db.execute("UPDATE tasks SET note = ?", ("evil\x1b]0;title\x07\x1b[2J\rOVERWRITE",))
    db.close()
    for args in (["list"], ["show", "1"]):
        r = run("orch-sched", *args)
        assert r.returncode == 0
        assert not any(c in r.stdout for c in "\x1b\x07\r")
    r = run("orch-sched", "list", "--json")
    assert json.loads(r.stdout)[0]["note"] == "evil\x1b]0;title\x07\x1b[2J\rOVERWRITE"


def test_run_with_the_database_locked_exits_75_in_one_line(run, hermetic, tmux):
    tmux.agent("lockd", "w")
    add(run, "lockd:w", "x")
    holder = sqlite3.connect(hermetic / "orch.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        r = run("orch-sched", "run")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert r.returncode == 75 and len(r.stderr.splitlines()) == 1
    assert r.stderr.startswith("orch-sched: error: ") and "busy" in r.stderr


def test_daemon_without_tmux_exits_69_in_the_foreground(run, tmp_path):
    interpreter_dir = os.path.dirname(os.path.realpath(sys.executable))
    for args in (["daemon"], ["daemon", "--detach"]):
        r = run(shutil.which("orch-sched"), *args, env={"PATH": interpreter_dir})
        assert r.returncode == 69 and "tmux is not installed" in r.stderr
        assert r.stdout == ""


def test_empty_enter_delay_means_the_default(run):
    r = run("orch-sched", "run", env={"ORCH_ENTER_DELAY": ""})
    assert r.returncode == 0 and r.stderr == ""
    r = run("orch-sched", "run", env={"ORCH_ENTER_DELAY": "soon"})
    assert r.returncode == 65 and "ORCH_ENTER_DELAY" in r.stderr


def test_ctrl_c_stops_a_foreground_daemon_with_130(run, tmux):
    import signal
    import subprocess
    proc = subprocess.Popen(["orch-sched", "daemon"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    from conftest import wait_until

    def running():
        # (While the daemon creates the store, status may find it busy: 75, and no output.)
        r = run("orch-sched", "status", "--json")
        return r.returncode in (0, 1) and json.loads(r.stdout)["daemon"]

    wait_until(running, what="the daemon to start")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130 and out == "" and err == ""


CONTROL = [("\x01", "U+0001"), ("\x1b[201~", "ESC (U+001B)"), ("\r", "CR (U+000D)"),
           ("\x7f", "DEL (U+007F)"), ("\x85", "U+0085"), ("\x9b", "CSI (U+009B)"),
           ("\x00", "NUL (U+0000)"), ("\x0b", "VT (U+000B)")]


@pytest.mark.parametrize("char,name", CONTROL, ids=[n for _, n in CONTROL])
def test_notes_with_control_characters_are_refused_and_nothing_is_stored(run, char, name):
    note = "ok\tso far" + char + "then"
    as_words = [] if char == "\x00" else [["add", "p:0", note]]  # no NUL in an argument
    for args, stdin in [*[(a, "") for a in as_words], (["add", "p:0", "-"], note.encode())]:
        r = run("orch-sched", *args, stdin=stdin)
        err = r.stderr if isinstance(r.stderr, str) else r.stderr.decode()
        assert r.returncode == 65, args
        assert err.count("\n") == 1
        assert f"control character, {name}, at character 10" in err
    assert tasks_json(run, "--all") == []
    # Updating a check-in by its key is refused the same way and keeps the old note.
    add(run, "--key", "k", "p:0", "first")
    r = run("orch-sched", "add", "--key", "k", "p:0", "-", stdin=note.encode())
    assert r.returncode == 65
    [task] = tasks_json(run)
    assert task["note"] == "first"


def test_newlines_and_tabs_are_text(run):
    add(run, "p:0", "-", stdin="line one\n\tindented\nline three\n")
    [task] = tasks_json(run)
    assert task["note"] == "line one\n\tindented\nline three"


def test_missing_target_warnings_name_what_is_missing(run, tmux):
    tmux.agent("here", "w")
    cases = [("here:w", None), ("here", None), ("gone:w", "can't find session: gone"),
             ("here:nope", "can't find window: nope"), ("here:w.7", "can't find pane: 7")]
    for target, missing in cases:
        r = run("orch-sched", "add", target, "x")
        assert r.returncode == 0 and r.stdout.strip().isdigit()
        if missing is None:
            assert r.stderr == "", target
        else:
            assert r.stderr == (f"orch-sched: warning: {target}: {missing} (the check-in is "
                                "stored and will be tried when due)\n")
    assert len(tasks_json(run)) == len(cases)


def test_add_stores_the_check_in_whatever_tmux_does(run, tmp_path):
    interpreter_dir = os.path.dirname(os.path.realpath(sys.executable))
    fake = tmp_path / "bin"
    fake.mkdir()
    tmux = fake / "tmux"
    cases = [("", "tmux is not installed"),            # no tmux on PATH at all
             ("#!/bin/sh\necho 'lost server' >&2; exit 1\n", "lost server"),
             (f"#!/bin/sh\nexec {shutil.which('sleep')} 60\n", "tmux did not answer within 5 s")]
    for n, (script, warning) in enumerate(cases):
        if script:
            tmux.write_text(script)
            tmux.chmod(0o755)
        r = run(shutil.which("orch-sched"), "add", "p:0", f"note {n}",
                env={"PATH": f"{fake}:{interpreter_dir}"})
        assert r.returncode == 0 and r.stdout.strip().isdigit(), r.stderr
        assert r.stderr.count("\n") == 1 and warning in r.stderr, r.stderr
    assert [t["note"] for t in tasks_json(run)] == ["note 0", "note 1", "note 2"]


def seed_db(path, rows):
    """A task_queue.db with the schema of the seed's scheduler.py."""
    import sqlite3
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE tasks (id INTEGER PRIMARY KEY AUTOINCREMENT, session_name TEXT "
                 "NOT NULL, agent_role TEXT NOT NULL, window_index INTEGER NOT NULL, next_run "
                 "REAL NOT NULL, interval_minutes INTEGER NOT NULL, note TEXT, last_run REAL, "
                 "retry_count INTEGER DEFAULT 0)")
    conn.executemany("INSERT INTO tasks (session_name, agent_role, window_index, next_run, "
                     "interval_minutes, note) VALUES (?, ?, ?, ?, ?, ?)", rows)
    conn.commit()
    conn.close()


def test_import_seed_turns_the_seed_s_tasks_into_check_ins_once(run, tmp_path):
    db = tmp_path / "task_queue.db"
    t0 = 1795636800  # 2026-11-25T20:00:00Z
    seed_db(db, [("proj", "orchestrator", 0, t0 + 600, 30, "Oversee the team"),
                 ("proj", "developer", 1, t0 + 60, 0, "Check the build"),
                 ("proj", "tester", 2, "soon", 15, "from the seed's history"),
                 ("other", "pm", 3, float(t0), 0, "bell \a")])
    res = run("orch-sched", "import-seed", str(db))
    assert res.returncode == 1  # two rows could not be imported
    assert res.stderr.splitlines() == [
        "orch-sched: warning: row 3: next_run 'soon' is not a number",
        "orch-sched: warning: row 4: the note holds a control character, BEL (U+0007), at "
        "character 6 (only newline and tab are allowed)"]
    ids = [int(x) for x in res.stdout.split()]
    assert len(ids) == 2
    listed = {t["id"]: t for t in json.loads(run("orch-sched", "list", "--json").stdout)}
    assert sorted(listed) == sorted(ids)
    by_target = {t["target"]: t for t in listed.values()}
    assert by_target["proj:0"]["due"] == "2026-11-25T20:10:00Z"
    assert by_target["proj:0"]["every_s"] == 1800 and by_target["proj:0"]["note"] == \
        "Oversee the team"
    assert by_target["proj:1"]["due"] == "2026-11-25T20:01:00Z"
    assert by_target["proj:1"]["every_s"] is None
    # A second import adds nothing, even after a check-in was delivered and is gone.
    assert run("orch-sched", "cancel", str(by_target["proj:1"]["id"])).returncode == 0
    again = run("orch-sched", "import-seed", str(db))
    assert again.returncode == 1 and again.stdout == ""
    assert len(json.loads(run("orch-sched", "list", "--all", "--json").stdout)) == 2


def test_import_seed_refuses_what_is_not_a_seed_database(run, tmp_path):
    res = run("orch-sched", "import-seed", str(tmp_path / "missing.db"))
    assert res.returncode == 65 and "no such file" in res.stderr
    (tmp_path / "junk.db").write_text("not sqlite")
    res = run("orch-sched", "import-seed", str(tmp_path / "junk.db"))
    assert res.returncode == 65 and "is not a seed scheduler's task_queue.db" in res.stderr


def test_add_batch_stores_all_or_none_and_names_the_bad_line(run, tmux):
    agent = tmux.agent("batch", "w")
    lines = [{"target": agent.target, "note": "first", "in": "5m"},
             {"target": "nosuch:0", "note": "second", "every": "1h", "key": "k"},
             {"target": agent.target, "note": "third -- $(x) 'q'", "at": "2030-01-01T00:00:00Z"},
             {"target": "nosuch:0", "note": "fourth", "in": 10}]
    stdin = "".join(json.dumps(x) + "\n" for x in lines) + "\n"
    res = run("orch-sched", "add", "--batch", stdin=stdin, env={"ORCH_NOW": "1795636800"})
    assert res.returncode == 0, res.stderr
    ids = [int(x) for x in res.stdout.split()]
    assert len(ids) == 4
    warnings = res.stderr.splitlines()
    assert len(warnings) == 1 and warnings[0].startswith("orch-sched: warning: nosuch:0:")
    listed = {t["id"]: t for t in json.loads(run("orch-sched", "list", "--json").stdout)}
    got = [(listed[i]["target"], listed[i]["note"], listed[i]["due"], listed[i]["every_s"],
            listed[i]["key"]) for i in ids]
    assert got == [(agent.target, "first", "2026-11-25T20:05:00Z", None, None),
                   ("nosuch:0", "second", "2026-11-25T20:00:00Z", 3600, "k"),
                   (agent.target, "third -- $(x) 'q'", "2030-01-01T00:00:00Z", None, None),
                   ("nosuch:0", "fourth", "2026-11-25T20:10:00Z", None, None)]
    for bad, said in (('{"target": "a:0", "note": "bell \\u0007"}', "control character"),
                      ('{"target": "a:0", "note": "x", "in": ""}', "bad in duration"),
                      ('{"target": "a:0", "note": "x", "colour": "red"}', "unknown key"),
                      ('["a:0", "x"]', "not a JSON object"), ("{oops", "not JSON")):
        res = run("orch-sched", "add", "--batch",
                  stdin='{"target": "a:0", "note": "fine"}\n\n' + bad + "\n")
        assert res.returncode == 65 and res.stdout == ""
        assert res.stderr.startswith("orch-sched: error: line 3: ") and said in res.stderr
        assert len(json.loads(run("orch-sched", "list", "--json").stdout)) == 4


def test_add_batch_is_one_transaction_even_when_a_key_is_busy(run, hermetic):
    first = run("orch-sched", "add", "--key", "busy", "a:0", "being delivered")
    assert first.returncode == 0
    conn = sqlite3.connect(hermetic / "orch.db")
    conn.execute("UPDATE tasks SET status = 'running', lease_until = 9e9 WHERE key = 'busy'")
    conn.commit()
    conn.close()
    res = run("orch-sched", "add", "--batch", stdin='{"target": "b:0", "note": "new"}\n'
              '{"target": "a:0", "note": "again", "key": "busy"}\n')
    assert res.returncode == 75 and "line 2: " in res.stderr and res.stdout == ""
    assert [t["note"] for t in json.loads(run("orch-sched", "list", "--json").stdout)] == \
        ["being delivered"]  # b:0's check-in went back with the rest


def test_list_and_log_stream_in_the_same_shape(run):
    assert run("orch-sched", "list", "--json").stdout == "[]\n"
    stdin = "".join(json.dumps({"target": f"s{i % 3}:0", "note": f"é {i}", "in": i}) + "\n"
                    for i in range(2500))  # more than one chunk of output
    assert run("orch-sched", "add", "--batch", stdin=stdin).returncode == 0
    out = run("orch-sched", "list", "--json").stdout
    parsed = json.loads(out)
    assert out == json.dumps(parsed, ensure_ascii=False, indent=2) + "\n"
    assert [t["note"] for t in parsed] == [f"é {i}" for i in range(2500)]
    porcelain = run("orch-sched", "list", "--porcelain").stdout.splitlines()
    assert [line.split("\t")[-1] for line in porcelain] == [f"é {i}" for i in range(2500)]
    table = run("orch-sched", "list").stdout.splitlines()
    assert len(table) == 2501 and table[0].split()[:2] == ["ID", "TARGET"]
    assert all(line.endswith(f"é {i}") for i, line in enumerate(table[1:]))


def test_show_of_a_check_in_never_tried_has_no_log_section(run):
    task_id = add(run, "--in", "1h", "s:0", "not yet")
    res = run("orch-sched", "show", str(task_id))
    assert res.returncode == 0
    assert res.stdout.endswith("note:\nnot yet\n") and "log:" not in res.stdout
