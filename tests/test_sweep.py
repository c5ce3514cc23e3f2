"""Races and failures found by a hostile review, each forced here: two passes over one
usage-limit reset, a resume that cannot be added, transactions SQLite already rolled
back, lost claims, and bad input that must be refused."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))

from orch import limits, store, tasks  # noqa: E402
from orch.errors import OrchError  # noqa: E402

T0 = 1795636800.0   # 2026-11-25T20:00:00Z; TZ is UTC in tests
LIMIT = ("● Working on it.\n\n  ⎿  You've hit your limit · resets 9pm (UTC)\n\n"
         "╭────────────╮\n│ >          │\n╰────────────╯\n")
PROMPT = "● Done.\n\n╭────────────╮\n│ >          │\n╰────────────╯\n"
AFTER = T0 + 2 * 3600  # past the reset and its margin


def held(conn, panes=("%1",)):
    """Account 'team' held at a limit, seen in PANES of server 'srv'."""
    seen = limits.detect(LIMIT, T0)
    assert seen.state == "limited"
    with store.tx(conn):
        for pane in panes:
            limits.suspend(conn, "team", seen, "srv", pane, f"s:{pane[1:]}", T0)


def resumes(conn):
    return conn.execute("SELECT id, target, status FROM tasks WHERE key LIKE 'resume:%' "
                        "ORDER BY id").fetchall()


def test_two_passes_racing_over_one_reset_add_one_resume():
    conn, other = store.connect(), store.connect()
    held(conn)

    def capture_racing(server, pane):
        # Pass B runs whole (and its resume is delivered) while pass A looks at the pane.
        ids = limits.resume_due(other, lambda s, p: PROMPT, now=AFTER)
        with store.tx(other):
            other.executemany("UPDATE tasks SET status = 'done' WHERE id = ?",
                              [(i,) for i in ids])
        return PROMPT

    assert limits.resume_due(conn, capture_racing, now=AFTER) == []
    assert [r["status"] for r in resumes(conn)] == ["done"]  # typed once, by pass B
    account = conn.execute("SELECT state FROM accounts WHERE name = 'team'").fetchone()
    assert account["state"] == "ok"


def test_a_resume_that_cannot_be_added_is_retried_and_the_other_windows_go_on(capsys):
    conn = store.connect()
    held(conn, panes=("%1", "%2"))
    # %1's resume from an earlier reset is being delivered right now: add refuses (75).
    busy = tasks.add(conn, "%1", "srv", "resume", T0 - 10, account="team",
                     key="resume:team:srv:%1")
    with store.tx(conn):
        conn.execute("UPDATE tasks SET status = 'running', lease_until = ? WHERE id = ?",
                     (AFTER + 600, busy))
    added = limits.resume_due(conn, lambda s, p: PROMPT, now=AFTER)
    assert [conn.execute("SELECT target FROM tasks WHERE id = ?", (i,)).fetchone()[0]
            for i in added] == ["%2"]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "resuming s:1 after the team limit" in err
    waiting = conn.execute("SELECT pane FROM limited_panes WHERE state = 'waiting'").fetchall()
    assert [r[0] for r in waiting] == ["%1"]
    assert conn.execute("SELECT state FROM accounts").fetchone()[0] == "suspended"
    # Once the old delivery ends, the next pass resumes %1 and frees the account.
    with store.tx(conn):
        conn.execute("UPDATE tasks SET status = 'done' WHERE id = ?", (busy,))
    assert len(limits.resume_due(conn, lambda s, p: PROMPT, now=AFTER + 60)) == 1
    assert conn.execute("SELECT state FROM accounts").fetchone()[0] == "ok"


def test_a_transaction_sqlite_already_rolled_back_keeps_its_own_error():
    conn = store.connect()
    with pytest.raises(ZeroDivisionError):
        with store.tx(conn):
            conn.execute("ROLLBACK")  # as SQLite does by itself on SQLITE_FULL
            raise ZeroDivisionError  # the error the caller must see
    assert not conn.in_transaction


def claimed(conn):
    task = tasks.add(conn, "s:w", "srv", "note", T0 - 1)
    got = tasks.claim(conn, "srv", "s:w", T0)
    assert got is not None and got[0]["id"] == task
    return got[0]


def test_finish_and_hold_refuse_a_claim_that_was_lost():
    conn = store.connect()
    mine = claimed(conn)
    # The lease ran out and another runner claimed the occurrence.
    later = mine["lease_until"] + 1
    theirs = tasks.claim(conn, "srv", "s:w", later)
    assert theirs is not None and theirs[0]["id"] == mine["id"]
    assert tasks.finish(conn, mine, "delivered", "typed", now=later + 1) is None
    tasks.hold(conn, mine, later + 600, "a limit", now=later + 1)
    row = tasks.get(conn, mine["id"])
    assert row["status"] == "running" and row["lease_until"] == theirs[0]["lease_until"]
    outcomes = [r["outcome"] for r in tasks.attempts(conn, mine["id"])]
    assert "delivered (claim lost)" in outcomes and "held (claim lost)" in outcomes


@pytest.mark.parametrize("option", ["--in", "--every", "--at"])
def test_an_empty_time_value_is_refused_not_taken_as_absent(run, option):
    res = run("orch-sched", "add", f"{option}=", "s:0", "a note")
    assert res.returncode == 65 and f"bad {option}" in res.stderr
    listed = run("orch-sched", "list", "--porcelain")
    assert listed.returncode == 0 and listed.stdout == ""


def test_a_port_in_another_script_s_digits_is_refused(run):
    res = run("orch-dash", "serve", "--port=\u0663")
    assert res.returncode == 65 and "--port" in res.stderr


def test_a_relative_state_directory_is_refused(run, tmp_path):
    res = run("orch-sched", "list", env={"ORCH_HOME": "state"}, cwd=str(tmp_path))
    assert res.returncode == 65 and "ORCH_HOME must be an absolute path" in res.stderr
    assert not (tmp_path / "state").exists()


def test_a_spool_that_cannot_be_written_is_74_and_puts_the_claim_back(tmux):
    """The pass's spool cannot take the note (here: its directory is gone, as a
    write fails on a full disk): 74 with one line, nothing typed, and the
    check-in pending again at once, untried."""
    from orch import deliver
    agent = tmux.agent("full", "w")
    conn = store.connect()
    task = tasks.add(conn, agent.target, os.environ["ORCH_TMUX_SOCKET"], "a note", T0)
    one = deliver.Pass()
    os.rmdir(one.spool)
    with pytest.raises(OrchError) as failed:
        one.run()
    assert failed.value.status == 74 and "cannot write a note to" in str(failed.value)
    row = tasks.get(conn, task)
    assert (row["status"], row["attempts"], row["typed"], row["lease_until"]) == \
        ("pending", 0, None, None)
    assert [a["outcome"] for a in tasks.attempts(conn, task)] == ["released"]
    assert agent.received() == b""
    assert deliver.run_pass() == 1  # the spool is back: it goes
    assert agent.wait_received(b"a note\r") == b"a note\r"


def test_a_full_disk_anywhere_is_74_in_one_line(capsys):
    from orch import cli

    def fills_the_disk(argv):
        with open("/dev/full", "w") as f:  # every write: ENOSPC
            f.write("x")
        return 0

    assert cli.main("orch-test", fills_the_disk, []) == 74
    err = capsys.readouterr().err
    assert err == "orch-test: error: No space left on device\n"


def private_state(tmp_path):
    state = tmp_path / "open" / "state"
    state.mkdir(parents=True)
    os.chmod(tmp_path / "open", 0o777)  # a parent anyone can write to, as /tmp: fine
    os.chmod(state, 0o700)
    return state


TOOLS = (("orch-sched", "list"), ("orch-lock", "who"), ("orch-sync", "status"),
         ("orch-dash", "--json"))


def test_a_state_directory_under_a_world_writable_parent_is_fine(run, tmp_path):
    env = {"ORCH_HOME": str(private_state(tmp_path))}
    for argv in TOOLS:
        res = run(*argv, env=env)
        assert res.returncode in (0, 1), (argv, res.stderr)  # 1: orch-lock who, nothing held


@pytest.mark.parametrize("how", ["group-writable", "another user's"])
def test_a_state_directory_others_can_change_is_refused(run, tmp_path, how):
    state = private_state(tmp_path)
    if how == "group-writable":
        os.chmod(state, 0o770)
        said = f"writable by group or others: orch keeps its state only where nobody else " \
               f"can change it; fix it with: chmod go-w {state}"
    else:
        os.chown(state, os.geteuid() + 4242, -1)
        said = "belongs to another user"
    for argv in TOOLS:
        res = run(*argv, env={"ORCH_HOME": str(state)})
        assert res.returncode == 77, (argv, res.stderr)
        assert res.stderr.count("\n") == 1 and said in res.stderr, res.stderr
    assert sorted(os.listdir(state)) == []  # nothing was created in it


@pytest.mark.parametrize("what", ["orch.db", "locks", "locks/file"])
def test_a_file_in_it_others_can_change_is_refused(run, tmp_path, what):
    state = private_state(tmp_path)
    env = {"ORCH_HOME": str(state)}
    assert run("orch-lock", "run", "job", "true", env=env).returncode == 0
    assert run("orch-sched", "list", env=env).returncode == 0
    path = state / "locks" / "job" if what == "locks/file" else state / what
    os.chmod(path, os.stat(path).st_mode | 0o002)
    res = run("orch-sched", "list", env=env) if what == "orch.db" else \
        run("orch-lock", "run", "job", "true", env=env)
    assert res.returncode == 77 and "writable by group or others" in res.stderr, res.stderr


def test_a_holder_record_others_can_change_is_refused(run, tmp_path):
    import subprocess

    from conftest import wait_until
    state = private_state(tmp_path)
    env = dict(os.environ, ORCH_HOME=str(state))
    tool = os.path.join(os.path.dirname(sys.executable), "orch-lock")
    holder = subprocess.Popen([tool, "run", "job", "sleep", "60"], env=env,
                              stdin=subprocess.DEVNULL)
    try:
        record = state / "holders" / "job"
        wait_until(record.exists, what="the holder record")
        os.chmod(record, 0o666)
        res = run("orch-lock", "who", "job", env={"ORCH_HOME": str(state)})
        assert res.returncode == 77 and "writable by group or others" in res.stderr
    finally:
        holder.terminate()
        holder.wait(timeout=10)


def test_a_spool_that_fails_still_lets_a_note_left_in_an_input_get_its_enter(tmux):
    """A dead runner pasted a note and never pressed Enter; this pass's spool then
    fails for another pane's note.  The note in the input needs no spool: it gets
    its Enter, while the other check-in is put back."""
    from orch import deliver
    left = tmux.agent("spl", "left", layout="claude")
    other = tmux.agent("spl", "other", layout="claude")
    server = os.environ["ORCH_TMUX_SOCKET"]
    conn = store.connect()
    stuck = tasks.add(conn, left.target, server, "pasted before the crash", T0)
    waiting = tasks.add(conn, other.target, server, "for the other pane", T0)
    claimed, _ = tasks.claim(conn, server, left.target, now=T0)  # the runner that died
    tasks.typing(conn, [claimed], now=T0)
    tmux("send-keys", "-t", left.target_exact(), "-l", "pasted before the crash")
    left.wait_screen("❯\u00a0pasted before the crash")
    one = deliver.Pass()
    os.rmdir(one.spool)
    with pytest.raises(OrchError) as failed:
        one.run()
    assert failed.value.status == 74
    assert [a["outcome"] for a in tasks.attempts(conn, waiting)] == ["released"]
    assert left.received() == b"pasted before the crash\r"
    assert [a["outcome"] for a in tasks.attempts(conn, stuck)] == ["expired", "delivered"]
    assert other.received() == b""
