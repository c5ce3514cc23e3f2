"""orch-lock new, ls, end and prune, against a real tmux server and real SQLite."""

import fcntl
import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time

import pytest
from conftest import wait_until
from orch import clock, orchestrations, store
from orch import tmux as tmux_adapter


def new(run, project, **kw):
    r = run("orch-lock", "new", project, **kw)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    session, directory = r.stdout.rstrip("\n").split("\t")
    return session, directory


def ls(run, *args, **kw):
    r = run("orch-lock", "ls", "--json", *args, **kw)
    assert r.returncode == 0, r.stderr
    return {o["session"]: o for o in json.loads(r.stdout)}


def test_new_prints_session_tab_dir_and_makes_a_private_directory(run, tmux, hermetic):
    session, directory = new(run, "My App!")
    assert re.fullmatch(r"my-app-[0-9a-f]{8}", session)
    assert directory == str(hermetic / "orchestrations" / session)
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    assert os.listdir(directory) == []
    # The shell idiom the man page gives works as written.
    idiom = ("IFS=$'\\t' read -r s d < <(orch-lock new myapp) && "
             "printf '%s|%s' \"$s\" \"$d\"")
    r = subprocess.run(["bash", "-c", idiom], check=False, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    s, d = r.stdout.split("|")
    assert s.startswith("myapp-") and os.path.isdir(d)


def test_new_json_and_the_directory_is_0700_whatever_the_umask(run, tmux):
    r = run("sh", "-c", "umask 000 && exec orch-lock new --json proj")
    assert r.returncode == 0, r.stderr
    o = json.loads(r.stdout)
    assert set(o) == {"session", "dir", "project", "created", "server"}
    assert o["project"] == "proj" and o["server"] == tmux.socket
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", o["created"])
    assert stat.S_IMODE(os.stat(o["dir"]).st_mode) == 0o700


@pytest.mark.parametrize("project, slug", [
    ("My App!", "my-app"), ("--x__y--", "x__y"), ("a  b\u00e9c", "a-b-c"), ("API v2.1", "api-v2-1"),
    ("x" * 100, "x" * 48),
])
def test_slug(project, slug):
    assert orchestrations.slug(project) == slug


@pytest.mark.parametrize("project", ["!!!", "", "!-!", "tab\there", "\u00e9\u00e9", "x" * 201])
def test_bad_project_names_are_65(run, tmux, hermetic, project):
    r = run("orch-lock", "new", project)
    assert r.returncode == 65 and r.stdout == ""
    assert "bad project name" in r.stderr
    assert not os.path.isdir(hermetic / "orchestrations") or \
        os.listdir(hermetic / "orchestrations") == []


@pytest.mark.parametrize("argv", [["new", os.fsdecode(b"a\xff")], ["end", os.fsdecode(b"\xff")]])
def test_arguments_that_are_not_utf8_are_65(run, hermetic, argv):
    r = run("orch-lock", *argv)
    assert (r.returncode, r.stdout) == (65, ""), r.stderr
    assert r.stderr.startswith("orch-lock: error: ") and "UTF-8" in r.stderr
    assert not os.path.isdir(hermetic / "orchestrations") or \
        os.listdir(hermetic / "orchestrations") == []


def test_parallel_news_get_distinct_sessions_and_directories(run, tmux, tmp_path):
    # All five start at the same instant: they wait on a shared flock we hold,
    # and are released together when we let go.
    gate = tmp_path / "gate"
    gate.touch()
    fd = os.open(gate, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    procs = [subprocess.Popen(["flock", "-s", str(gate), "orch-lock", "new", "race"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(5)]
    try:
        wait_until(lambda: _waiting_on(gate) == 5, what="five waiters at the gate")
    finally:
        os.close(fd)
    results = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * 5, results
    records = [out.rstrip("\n").split("\t") for out, _ in results]
    sessions = {s for s, _ in records}
    dirs = {d for _, d in records}
    assert len(sessions) == 5 and len(dirs) == 5
    assert all(os.path.isdir(d) for d in dirs)
    assert set(ls(run, "--all")) == sessions


def _waiting_on(path):
    st = os.stat(path)
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    with open("/proc/locks") as f:
        return sum(1 for line in f if "->" in line and key in line.split())


def test_new_never_picks_a_session_that_exists_in_tmux(tmux, monkeypatch):
    tmux.shell("taken-00000000")
    draws = iter([b"\x00" * 4, b"\x00" * 4, b"\x01" * 4])
    monkeypatch.setattr(orchestrations.os, "urandom", lambda n: next(draws))
    conn = store.connect()
    o = orchestrations.create(conn, "taken", tmux_adapter.server_from_env())
    assert o["session"] == "taken-01010101"
    conn.close()


def test_ls_states_follow_the_tmux_session_on_its_own_server(run, tmux):
    a, a_dir = new(run, "alpha")
    b, _ = new(run, "beta")
    assert ls(run) == {}  # no session exists yet
    tmux.shell(a)
    assert set(ls(run)) == {a}
    every = ls(run, "--all")
    assert (every[a]["state"], every[b]["state"]) == ("active", "ended")
    assert set(every[a]) == {"session", "project", "state", "created", "ended", "dir", "server"}
    assert every[a]["project"] == "alpha" and every[a]["dir"] == a_dir
    assert every[a]["server"] == tmux.socket and every[a]["ended"] is None

    r = run("orch-lock", "ls", "--all", "--porcelain")
    assert r.returncode == 0
    rows = [line.split("\t") for line in r.stdout.splitlines()]
    assert [(row[0], row[1], row[2], row[4]) for row in rows] == \
        [(a, "alpha", "active", a_dir), (b, "beta", "ended", every[b]["dir"])]
    assert rows[0][3] == every[a]["created"]
    r = run("orch-lock", "ls")
    assert r.returncode == 0
    assert r.stdout.split("\n")[0].split() == ["SESSION", "PROJECT", "STATE", "CREATED", "DIR"]

    # A session of that name on another server is not this orchestration's.
    other = tempfile.mkdtemp(prefix="orcho")
    socket = os.path.join(other, "s")
    try:
        subprocess.run(["tmux", "-S", socket, "-f", "/dev/null", "new-session", "-d", "-s", b,
                        "sh"], check=True)
        assert set(ls(run, env={"ORCH_TMUX_SOCKET": socket})) == {a}
    finally:
        subprocess.run(["tmux", "-S", socket, "kill-server"], check=False, capture_output=True)
        shutil.rmtree(other, ignore_errors=True)

    tmux("kill-session", "-t", f"={a}")
    assert ls(run) == {}
    assert {o["state"] for o in ls(run, "--all").values()} == {"ended"}


def test_end_marks_ended_and_unknown_is_1(run, tmux):
    s, _ = new(run, "proj")
    tmux.shell(s)
    r = run("orch-lock", "end", s)
    assert r.returncode == 0 and r.stdout == "" and r.stderr == ""
    o = ls(run, "--all")[s]
    assert o["state"] == "ended" and o["ended"] is not None
    r = run("orch-lock", "end", "no-such-00000000")
    assert r.returncode == 1 and "no orchestration" in r.stderr


def test_prune_safety(run, tmux):
    active, active_dir = new(run, "active")          # running, with files
    tmux.shell(active)
    open(os.path.join(active_dir, "state.json"), "w").close()
    ended_live, _ = new(run, "endedlive")            # ended by hand, session still there
    tmux.shell(ended_live)
    assert run("orch-lock", "end", ended_live).returncode == 0
    empty, empty_dir = new(run, "empty")             # ended, nothing in its directory
    full, full_dir = new(run, "full")                # ended, files in its directory
    os.makedirs(os.path.join(full_dir, "sub"))
    open(os.path.join(full_dir, "sub", "log"), "w").close()
    for s in (empty, full):
        assert run("orch-lock", "end", s).returncode == 0

    r = run("orch-lock", "prune", "--older=1h", "--delete")   # all too recent
    assert r.returncode == 0
    assert len(ls(run, "--all")) == 4 and os.path.isdir(empty_dir)

    r = run("orch-lock", "prune", "--older=0")
    assert r.returncode == 0
    assert f"kept {full}" in r.stderr and "forgot 1 orchestration" in r.stderr
    left = ls(run, "--all")
    assert set(left) == {active, ended_live, full}
    assert not os.path.exists(empty_dir) and os.path.exists(os.path.join(full_dir, "sub", "log"))

    r = run("orch-lock", "prune", "--older=0", "--delete")
    assert r.returncode == 0
    assert set(ls(run, "--all")) == {active, ended_live}
    assert not os.path.exists(full_dir)
    assert os.path.exists(os.path.join(active_dir, "state.json"))


def test_prune_counts_from_when_the_session_was_found_gone(run, tmux):
    s, directory = new(run, "gone")
    tmux.shell(s)
    tmux("kill-session", "-t", f"={s}")
    # The first prune to see it gone starts its clock, whatever its age.
    later = {"ORCH_NOW": clock.iso(time.time() + 3 * 86400)}
    assert run("orch-lock", "prune", env=later).returncode == 0
    assert s in ls(run, "--all")
    much_later = {"ORCH_NOW": clock.iso(time.time() + 5 * 86400)}
    r = run("orch-lock", "prune", env=much_later)
    assert r.returncode == 0, r.stderr
    assert s not in ls(run, "--all") and not os.path.exists(directory)


def test_prune_bad_duration_is_65(run):
    r = run("orch-lock", "prune", "--older=soon")
    assert r.returncode == 65 and "bad --older duration" in r.stderr
