"""orch-lock run and who: real processes contending for real kernel locks."""

import fcntl
import json
import os
import re
import signal
import subprocess
import threading
import time

import pytest
from conftest import wait_until
from orch import locks
from orch.errors import OrchError


def start(*args, **kw):
    """orch-lock ARGS in the background (stdin closed, output captured)."""
    return subprocess.Popen(["orch-lock", *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def held(run, name):
    return run("orch-lock", "who", name).returncode == 0


@pytest.fixture
def holder(run, tmp_path):
    """hold(NAME, *command): a background `orch-lock run` holding NAME (sleep 60 by default)
    until it ends or the test does; returns the Popen once NAME is seen held."""
    procs = []

    def hold(name, *command, extra=()):
        p = start("run", *extra, name, *(command or ("sleep", "60")))
        procs.append(p)
        wait_until(lambda: held(run, name) or p.poll() is not None, what=f"{name} held")
        assert p.poll() is None, p.communicate()
        return p
    yield hold
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)  # forwarded to the command
        p.communicate(timeout=30)


def lock_file(state, name):
    return state / "locks" / name


def gone(pid):
    return locks.process_start(pid) is None


# --- mutual exclusion ---------------------------------------------------------------

def test_concurrent_increments_never_lose_an_update(tmp_path):
    counter = tmp_path / "counter"
    counter.write_text("0\n")
    # Read, pause, write: without the lock nearly every update would be lost.
    script = f'n=$(cat "{counter}"); sleep 0.01; echo $((n + 1)) > "{counter}"'
    procs = [start("run", "-w", "120", "counter", "sh", "-c", script) for _ in range(16)]
    results = [p.communicate(timeout=150) + (p.returncode,) for p in procs]
    assert [r[2] for r in results] == [0] * 16, results
    assert counter.read_text() == "16\n"


def test_n_fails_at_once_and_w_gives_up_after_its_time(run, holder, tmp_path):
    holder("busy")
    never = str(tmp_path / "never")
    started = time.monotonic()
    r = run("orch-lock", "run", "-n", "busy", "touch", never)
    assert r.returncode == 75 and r.stdout == ""
    assert "lock busy is held by pid" in r.stderr and "(sleep 60)" in r.stderr
    assert time.monotonic() - started < 10
    r = run("orch-lock", "run", "-n", "-E", "3", "busy", "touch", never)
    assert r.returncode == 3
    started = time.monotonic()
    r = run("orch-lock", "run", "-w", "0.5", "busy", "touch", never)
    assert r.returncode == 75 and "is held" in r.stderr
    assert 0.45 <= time.monotonic() - started < 15
    r = run("orch-lock", "run", "-w", "0", "busy", "touch", never)
    assert r.returncode == 75
    assert not os.path.exists(never)


def test_a_waiter_runs_as_soon_as_the_holder_ends(run, holder, tmp_path):
    first = holder("queue")
    out = tmp_path / "out"
    waiter = start("run", "-w", "60", "queue", "sh", "-c", f'echo second > "{out}"')
    wait_until(lambda: _blocked_on(lock_file(tmp_path / "state", "queue")) == 1,
               what="the waiter to block in flock")
    assert not out.exists() and waiter.poll() is None
    released = time.monotonic()
    first.send_signal(signal.SIGTERM)
    assert waiter.wait(timeout=30) == 0
    assert time.monotonic() - released < 10  # rough: it is woken, not polling
    assert out.read_text() == "second\n"
    assert first.wait(timeout=30) == 128 + signal.SIGTERM


def _blocked_on(path):
    st = os.stat(path)
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    with open("/proc/locks") as f:
        return sum(1 for line in f if "->" in line and key in line.split())


# --- a lock never outlives its holder -----------------------------------------------------

def test_kill_9_of_the_holder_frees_the_lock_at_once(run, holder, hermetic):
    p = holder("crash")
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=30)
    assert (hermetic / "holders" / "crash").exists()  # the record stays, stale
    r = run("orch-lock", "who", "crash")
    assert r.returncode == 1 and r.stdout == ""
    r = run("orch-lock", "run", "-n", "crash", "echo", "mine")
    assert r.returncode == 0 and r.stdout == "mine\n"


def test_when_orch_lock_is_killed_its_command_dies_too(tmp_path):
    pidfile = tmp_path / "pid"
    p = start("run", "orphan", "sh", "-c", f'echo $$ > "{pidfile}"; exec sleep 60')
    wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), what="the command")
    child = int(pidfile.read_text())
    try:
        assert not gone(child)
        os.kill(p.pid, signal.SIGKILL)
        assert p.wait(timeout=30) == -signal.SIGKILL
        wait_until(lambda: gone(child), what="the command to die with orch-lock")
    finally:
        if not gone(child):
            os.kill(child, signal.SIGKILL)


def test_a_daemon_started_by_the_command_does_not_keep_the_lock(run, tmp_path):
    pidfile = tmp_path / "daemon"
    r = run("orch-lock", "run", "spawner", "sh", "-c",
            f'sleep 60 >/dev/null 2>&1 & echo $! > "{pidfile}"')
    assert r.returncode == 0
    daemon = int(pidfile.read_text())
    try:
        assert not gone(daemon)  # it outlives orch-lock, as a daemon should
        r = run("orch-lock", "run", "-n", "spawner", "true")
        assert r.returncode == 0, r.stderr
        assert run("orch-lock", "who", "spawner").returncode == 1
    finally:
        os.kill(daemon, signal.SIGKILL)


def test_the_command_inherits_no_lock_descriptor(run, hermetic):
    r = run("orch-lock", "run", "fds", "sh", "-c", "ls -l /proc/$$/fd")
    assert r.returncode == 0
    assert str(hermetic / "locks" / "fds") not in r.stdout


# --- exit status ---------------------------------------------------------------------

@pytest.mark.parametrize("script, status", [
    ("exit 0", 0), ("exit 7", 7), ("exit 255", 255),
    ("kill -TERM $$", 128 + signal.SIGTERM), ("kill -KILL $$", 128 + signal.SIGKILL),
    ("kill -USR1 $$", 128 + signal.SIGUSR1),
])
def test_the_command_status_is_passed_through(run, script, status):
    r = run("orch-lock", "run", "st", "sh", "-c", script)
    assert r.returncode == status, r.stderr


def test_a_missing_or_unrunnable_command_is_127_or_126(run, tmp_path):
    r = run("orch-lock", "run", "st", "no-such-command-anywhere")
    assert r.returncode == 127
    assert "cannot run no-such-command-anywhere" in r.stderr
    plain = tmp_path / "plain"
    plain.write_text("not a program\n")
    r = run("orch-lock", "run", "st", str(plain))
    assert r.returncode == 126


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signals_to_orch_lock_reach_the_command(tmp_path, sig):
    ready = tmp_path / "ready"
    script = (f'trap "exit 42" {sig.name[3:]}; touch "{ready}"; '
              'while :; do sleep 0.05; done')
    p = start("run", "sig", "sh", "-c", script)
    wait_until(ready.exists, what="the command to set its trap")
    p.send_signal(sig)
    assert p.wait(timeout=30) == 42


def test_the_command_starts_with_default_signal_handling(run):
    # Python ignores SIGPIPE; `yes` must still die of it quietly, not complain.
    r = run("orch-lock", "run", "pipe", "sh", "-c", "yes | head -n 1")
    assert r.returncode == 0 and r.stdout == "y\n" and r.stderr == ""


def test_words_after_name_are_the_command_verbatim(run):
    r = run("orch-lock", "run", "-w", "5", "verbatim", "printf", "%s|", "-n", "-w", "x",
            "--help", "-E", "-- y")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "-n|-w|x|--help|-E|-- y|"


# --- who ---------------------------------------------------------------------------

def test_who_while_held_and_after(run, holder):
    p = holder("build", "sleep", "60", extra=("-m", "nightly\tbuild"))
    r = run("orch-lock", "who", "build", "--json")
    assert r.returncode == 0
    [record] = json.loads(r.stdout)
    assert record["name"] == "build" and record["pid"] == p.pid
    assert record["host"] == os.uname().nodename
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", record["since"])
    assert record["command"] == "sleep 60" and record["note"] == "nightly\tbuild"
    r = run("orch-lock", "who", "--porcelain")
    assert r.returncode == 0
    assert r.stdout == (f"build\t{p.pid}\t{os.uname().nodename}\t{record['since']}\t"
                        "sleep 60\tnightly\\tbuild\n")
    r = run("orch-lock", "who")
    assert r.returncode == 0
    assert r.stdout.splitlines()[0].split() == ["NAME", "PID", "HOST", "SINCE", "NOTE",
                                                "COMMAND"]
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=30) == 128 + signal.SIGTERM
    r = run("orch-lock", "who", "build")
    assert r.returncode == 1 and r.stdout == ""
    r = run("orch-lock", "who", "build", "--json")
    assert r.returncode == 1 and json.loads(r.stdout) == []
    r = run("orch-lock", "who")
    assert r.returncode == 0 and r.stdout == ""


def test_who_shows_a_note_with_tabs_and_newlines_on_its_own_row(run, holder):
    p = holder("noted", "sleep", "60", extra=("-m", "one\ttwo\nthree\x1b[2J"))
    r = run("orch-lock", "who")
    assert r.returncode == 0, r.stderr
    header, row = r.stdout.splitlines()
    assert header.split() == ["NAME", "PID", "HOST", "SINCE", "NOTE", "COMMAND"]
    assert row.startswith("noted ") and row.endswith("sleep 60") and str(p.pid) in row
    assert "\t" not in row and "\x1b" not in row
    assert row.index("one") == header.index("NOTE")


def test_who_sees_a_lock_taken_by_flock_1(run, hermetic, tmp_path):
    # Any flock(2) user of the lock file holds the lock; who asks the kernel.
    os.makedirs(hermetic / "locks", mode=0o700, exist_ok=True)
    path = lock_file(hermetic, "shared")
    path.touch()
    # -o: sleep does not inherit the lock, so killing flock(1) frees it.
    # Its own process group, so that both flock(1) and its sleep end with the test.
    p = subprocess.Popen(["flock", "-o", str(path), "sleep", "60"], stdin=subprocess.DEVNULL,
                         start_new_session=True)
    try:
        wait_until(lambda: held(run, "shared"), what="flock(1) to take the lock")
        r = run("orch-lock", "who", "shared", "--porcelain")
        assert r.returncode == 0 and r.stdout.split("\t")[:2] == ["shared", str(p.pid)]
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    assert run("orch-lock", "who", "shared").returncode == 1


def test_a_record_of_a_reused_pid_is_not_a_holder(run, hermetic):
    # A record naming a live process with another start time: its writer is dead.
    os.makedirs(hermetic / "holders", mode=0o700, exist_ok=True)
    record = {"name": "old", "pid": os.getpid(), "start": locks.process_start(os.getpid()) + 1,
              "host": "h", "since": 1.0, "command": "x", "note": None}
    (hermetic / "holders" / "old").write_text(json.dumps(record))
    r = run("orch-lock", "who", "old")
    assert r.returncode == 1 and r.stdout == ""


def test_who_never_takes_the_lock(run, tmp_path):
    stop = threading.Event()
    lookers = []

    def look():
        while not stop.is_set():
            lookers.append(run("orch-lock", "who", "peek").returncode)
    t = threading.Thread(target=look)
    t.start()
    try:
        statuses = [run("orch-lock", "run", "-n", "peek", "true").returncode for _ in range(15)]
    finally:
        stop.set()
        t.join()
    assert statuses == [0] * 15
    assert lookers and set(lookers) <= {0, 1}


# --- bad input -----------------------------------------------------------------------

@pytest.mark.parametrize("name", ["a/b", "/etc/passwd", "..", "a..b", "../escape", ".hidden",
                                  "x" * 129, "", "tab\tname", "new\nline", "sp ace"])
def test_hostile_lock_names_are_refused(run, hermetic, tmp_path, name):
    marker = tmp_path / "ran"
    r = run("orch-lock", "run", name, "touch", str(marker))
    assert r.returncode == 65, r.stderr
    assert "bad lock name" in r.stderr and not marker.exists()
    assert run("orch-lock", "who", name).returncode == 65
    assert not (hermetic.parent / "escape").exists()
    assert not (hermetic / "locks").exists() or os.listdir(hermetic / "locks") == []


def test_a_name_with_a_leading_dash_or_nul_is_refused(run, tmp_path):
    marker = tmp_path / "ran"
    r = run("orch-lock", "run", "-x", "touch", str(marker))
    assert r.returncode == 64 and not marker.exists()
    with pytest.raises(OrchError) as e:  # argv cannot carry NUL; the check still refuses it
        locks.check_name("a\0b")
    assert e.value.status == 65
    assert locks.check_name("x" * 128) == "x" * 128


def test_a_symlink_planted_at_the_lock_path_is_refused(run, hermetic, tmp_path):
    os.makedirs(hermetic / "locks", mode=0o700)
    target = tmp_path / "victim"
    os.symlink(target, hermetic / "locks" / "trap")
    r = run("orch-lock", "run", "trap", "touch", str(tmp_path / "ran"))
    assert r.returncode == 73
    assert "symbolic link" in r.stderr
    assert not target.exists() and not (tmp_path / "ran").exists()


def test_a_symlink_planted_at_the_holder_record_is_replaced_not_followed(run, hermetic,
                                                                         tmp_path):
    os.makedirs(hermetic / "holders", mode=0o700)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    os.symlink(victim, hermetic / "holders" / "rec")
    r = run("orch-lock", "run", "rec", "true")
    assert r.returncode == 0
    assert victim.read_text() == "precious\n"


@pytest.mark.parametrize("args, status", [
    (["-w", "-1"], 65), (["-w", "abc"], 65), (["-w", ""], 65), (["-w", "1e3"], 65),
    (["-w", "inf"], 65), (["-w", "nan"], 65), (["-E", "256"], 65), (["-E", "x"], 65),
    (["-E", "-1"], 65), (["-n", "-w", "1"], 64),
    # Digits of other scripts are not numbers here; waits end within 10^9 s.
    (["-E", "\u0663"], 65), (["-E", "\uff11"], 65), (["-w", "\u0663"], 65),
    (["-w", "\u0661.5"], 65), (["-w", "1000000000.5"], 65), (["-w", "9" * 400], 65),
])
def test_bad_option_values(run, tmp_path, args, status):
    marker = tmp_path / "ran"
    r = run("orch-lock", "run", *args, "opts", "touch", str(marker))
    assert r.returncode == status, r.stderr
    assert r.stdout == "" and r.stderr.startswith("orch-lock: error: ")
    assert not marker.exists()


@pytest.mark.parametrize("argv", [["run"], ["run", "name"], ["run", "-w", "5", "name"],
                                  ["run", "-w"], ["who", "a", "b"], ["frobnicate"]])
def test_a_command_line_that_does_not_parse_is_64(run, argv):
    r = run("orch-lock", *argv)
    assert r.returncode == 64 and r.stdout == ""
    assert "does not parse" in r.stderr and "Usage:" in r.stderr


def test_the_longest_wait_is_accepted(run, tmp_path):
    marker = tmp_path / "ran"
    r = run("orch-lock", "run", "-w", "1000000000", "-E", "255", "opts", "touch", str(marker))
    assert r.returncode == 0, r.stderr
    assert marker.exists()


def test_help_goes_to_stdout(run):
    r = run("orch-lock", "--help")
    assert r.returncode == 0 and "orch-lock run" in r.stdout and r.stderr == ""


# --- the state directory ------------------------------------------------------------------

def test_lock_files_are_private_and_never_deleted(run, hermetic):
    assert run("orch-lock", "run", "keep", "true").returncode == 0
    path = lock_file(hermetic, "keep")
    assert path.exists() and (os.stat(path).st_mode & 0o777) == 0o600
    assert not (hermetic / "holders" / "keep").exists()  # the record goes with the holder


def test_the_state_directory_is_not_on_a_network_file_system_here(run, hermetic):
    assert locks.fs_type(str(hermetic))
    assert locks.on_network_fs(str(hermetic)) is None
    r = run("orch-lock", "run", "fs", "true")
    assert r.returncode == 0 and "network file system" not in r.stderr


def test_holder_records_are_whole_json(hermetic):
    with locks.held("rec"):
        locks.write_holder("rec", command="a \"quoted\" \\ \n\x00é😀\udcff", note=None)
        record = json.loads((hermetic / "holders" / "rec").read_text())
        locks.clear_holder("rec")  # this test process is no daemon to stop at teardown
    assert record["command"] == "a \"quoted\" \\ \n\x00é😀\udcff"
    assert record["pid"] == os.getpid() and record["note"] is None


def test_a_waiter_blocks_in_flock_not_polling(run, holder, hermetic):
    holder("poll")
    p = start("run", "-w", "30", "poll", "true")
    try:
        wait_until(lambda: _blocked_on(lock_file(hermetic, "poll")) == 1,
                   what="the waiter in the kernel's queue")
        fd = os.open(lock_file(hermetic, "poll"), os.O_RDONLY)
        try:  # and the lock is still the holder's
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=30)
