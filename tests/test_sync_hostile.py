"""orch-sync against hostile or broken surroundings: a busy or unreadable store, a
symlink at the events file, options hidden in git config, git missing or vanishing,
control characters in paths, and arguments that are not UTF-8."""

import json
import os
import signal
import sqlite3
import subprocess
import sys

import pytest
from conftest import wait_until
from gitrepo import Repo, fire_hooks, git, tree_bytes, write

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, os.path.join(ROOT, "lib"))

from orch import git as orch_git  # noqa: E402
from orch import store  # noqa: E402
from orch.errors import OrchError  # noqa: E402
from orch.sync import events as sync_events  # noqa: E402
from orch.sync import hooks as sync_hooks  # noqa: E402
from orch.sync import view  # noqa: E402

VENV_BIN = os.path.dirname(sys.executable)
USER_PC = "#!/bin/sh\nexit 0\n"


def start(*args, env=None, **kw):
    """orch-sync ARGS in the background, stdin closed."""
    return subprocess.Popen(["orch-sync", *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, **(env or {})), **kw)


def hooks_of(repo):
    return os.path.join(repo.main, ".git", "hooks")


def with_user_hook(repo):
    path = os.path.join(hooks_of(repo), "post-checkout")
    write(path, USER_PC)
    os.chmod(path, 0o755)


def repo_rows():
    conn = store.connect()
    try:
        return {r["repo"]: r["hooks"] for r in view.recorded_repos(conn)}
    finally:
        conn.close()


def common_dir(repo):
    return orch_git.repo(repo.main).common_dir


@pytest.fixture
def two(run, tmp_path):
    """Repository `fresh` (a user hook, not installed) and `done` (a user hook, installed)."""
    fresh = Repo(tmp_path / "fresh", branches=("a1",))
    done = Repo(tmp_path / "done", branches=("a1",))
    for repo in (fresh, done):
        with_user_hook(repo)
    r = run("orch-sync", "install", f"--repo={done.main}")
    assert r.returncode == 0, r.stderr
    return fresh, done


# --- install and uninstall are all or nothing ------------------------------------------

def test_install_and_uninstall_change_nothing_while_the_store_is_locked(two, hermetic):
    fresh, done = two
    before = {h: tree_bytes(hooks_of(h)) for h in (fresh, done)}
    rows = repo_rows()
    holder = sqlite3.connect(str(hermetic / "orch.db"), isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        # Both at once: each waits out the store's busy timeout.
        procs = [start("install", f"--repo={fresh.main}"),
                 start("uninstall", f"--repo={done.main}")]
        results = [(p.wait(timeout=60), *p.communicate()) for p in procs]
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    for status, out, err in results:
        assert (status, out) == (75, ""), err
        assert err.startswith("orch-sync: error: ") and err.count("\n") == 1
    assert {h: tree_bytes(hooks_of(h)) for h in (fresh, done)} == before
    assert repo_rows() == rows and rows[common_dir(done)] is not None
    assert not os.path.exists(sync_events.events_path(orch_git.repo(fresh.main)))
    assert os.path.exists(sync_events.events_path(orch_git.repo(done.main)))


def test_an_install_that_fails_half_way_is_taken_back(two):
    fresh, _ = two
    hooks = hooks_of(fresh)
    # reference-transaction is written first; then post-checkout cannot be (a directory
    # sits where its temporary file goes): everything done so far must be undone.
    os.mkdir(os.path.join(hooks, f".post-checkout.{os.getpid()}.tmp"))  # paths.write_atomic's
    before, rows = tree_bytes(hooks), repo_rows()
    conn = store.connect()
    try:
        with pytest.raises(OrchError) as failed:
            sync_hooks.install(conn, orch_git.repo(fresh.main))
    finally:
        conn.close()
    assert failed.value.status == 73
    assert tree_bytes(hooks) == before and repo_rows() == rows
    assert not os.path.exists(sync_events.events_path(orch_git.repo(fresh.main)))


def corrupt_sync_tables(state):
    """Overwrite the root page of each sync table: the store opens, its tables cannot be read."""
    path = str(state / "orch.db")
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = conn.execute("PRAGMA page_size").fetchone()[0]
    roots = [r[0] for r in conn.execute("SELECT rootpage FROM sqlite_master "
                                        "WHERE name LIKE 'sync_%'")]
    conn.close()
    with open(path, "r+b") as f:
        for root in roots:
            f.seek((root - 1) * size)
            f.write(b"\xff" * size)


def test_install_uninstall_and_the_daemon_refuse_an_unreadable_store_changing_nothing(
        run, two, hermetic):
    fresh, done = two
    before = {h: tree_bytes(hooks_of(h)) for h in (fresh, done)}
    corrupt_sync_tables(hermetic)
    for verb, repo in (("install", fresh), ("uninstall", done)):
        r = run("orch-sync", verb, f"--repo={repo.main}")
        assert (r.returncode, r.stdout) == (74, ""), r.stderr
        assert r.stderr.startswith("orch-sync: error: ") and r.stderr.count("\n") == 1
    assert {h: tree_bytes(hooks_of(h)) for h in (fresh, done)} == before
    # --detach finds out in the foreground: no pid of a daemon that dies at once.
    r = run("orch-sync", "daemon", "--detach")
    assert (r.returncode, r.stdout) == (74, ""), r.stderr
    assert r.stderr.startswith("orch-sync: error: ") and r.stderr.count("\n") == 1
    assert view.daemon_pid() is None


# --- the events file ---------------------------------------------------------------------

def test_a_symlink_at_the_events_file_is_never_written_through(run, tmp_path):
    repo = Repo(tmp_path / "r", branches=("a1",))
    assert run("orch-sync", "install", f"--repo={repo.main}").returncode == 0
    events = sync_events.events_path(orch_git.repo(repo.main))
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    os.unlink(events)
    os.symlink(victim, events)
    fire_hooks(repo.path("a1"))
    assert victim.read_text() == "precious\n"
    # orch-sync's own reads refuse it, out loud.
    r = run("orch-sync", "run")
    assert r.returncode == 1 and "symbolic link" in r.stderr
    r = run("orch-sync", "now", f"--repo={repo.main}")
    assert r.returncode == 73 and "symbolic link" in r.stderr
    assert victim.read_text() == "precious\n" and os.path.islink(events)


# --- git config values never become options --------------------------------------------

def test_orch_remote_and_orch_base_cannot_inject_options(run, tmp_path):
    repo = Repo(tmp_path / "r", branches=("a1",))
    origin = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(origin))
    git(repo.main, "remote", "add", "origin", str(origin))
    git(repo.main, "push", "-q", "origin", "main")
    pwned = tmp_path / "PWNED"
    evil = f"--upload-pack=touch {pwned};git-upload-pack"
    git(repo.main, "config", "orch.remote", evil)
    for configured in (False, True):
        if configured:  # a remote of that very name: still an option to git
            git(repo.main, "config", f"remote.{evil}.url", str(origin))
        r = run("orch-sync", "now", f"--repo={repo.main}", "--json")
        assert r.returncode == 69 and "bad orch.remote" in r.stderr
        rows = json.loads(r.stdout)
        assert rows and all("bad orch.remote" in row["reason"] for row in rows)
        assert not pwned.exists()
    git(repo.main, "config", "orch.remote", str(origin))  # a URL, not a configured remote
    r = run("orch-sync", "now", f"--repo={repo.main}", "--json")
    assert r.returncode == 69 and "bad orch.remote" in json.loads(r.stdout)[0]["reason"]
    git(repo.main, "config", "--unset", "orch.remote")
    git(repo.main, "config", "orch.base", f"--output={tmp_path / 'written'}")
    r = run("orch-sync", "now", f"--repo={repo.main}", "--json")
    assert r.returncode == 69 and "bad orch.base" in json.loads(r.stdout)[0]["reason"]
    assert not (tmp_path / "written").exists()
    # A good remote still works.
    git(repo.main, "config", "--unset", "orch.base")
    git(repo.main, "config", "orch.remote", "origin")
    r = run("orch-sync", "now", f"--repo={repo.main}", "--json")
    assert r.returncode == 0, r.stderr
    assert {row["base"] for row in json.loads(r.stdout)} == {"origin/main"}


# --- git missing, at start and later -------------------------------------------------------

def test_without_git_run_and_daemon_fail_at_once(run, tmp_path):
    repo = Repo(tmp_path / "r", branches=("a1",))
    assert run("orch-sync", "install", f"--repo={repo.main}").returncode == 0
    for argv in (["run"], ["daemon"], ["daemon", "--detach"]):
        r = run("orch-sync", *argv, env={"PATH": VENV_BIN}, timeout=60)
        assert (r.returncode, r.stdout) == (69, ""), (argv, r.stderr)
        assert r.stderr.startswith("orch-sync: error: git is not installed")
        assert r.stderr.count("\n") == 1
    assert view.daemon_pid() is None


def test_the_daemon_carries_on_when_git_vanishes_and_comes_back(run, tmp_path):
    repo = Repo(tmp_path / "r", branches=("a1",))
    assert run("orch-sync", "install", f"--repo={repo.main}").returncode == 0
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    real_git = subprocess.run(["sh", "-c", "command -v git"], capture_output=True,
                              text=True).stdout.strip()
    os.symlink(real_git, bin_dir / "git")
    log = tmp_path / "daemon.log"
    with open(log, "w") as err:
        p = subprocess.Popen(["orch-sync", "daemon"], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=err,
                             env=dict(os.environ, PATH=f"{bin_dir}:{VENV_BIN}"))
    try:
        wait_until(lambda: os.path.exists(view.status_path()), what="the first pass")
        os.unlink(bin_dir / "git")
        repo.commit("main", {"base": "1\n"})
        wait_until(lambda: "orch-sync: error: " in log.read_text(), what="the failure logged")
        assert p.poll() is None
        os.symlink(real_git, bin_dir / "git")
        wait_until(lambda: repo.head("a1") == repo.head("main"), timeout=30,
                   what="the daemon to sync once git is back")
    finally:
        p.send_signal(signal.SIGTERM)
        status = p.wait(timeout=30)
    assert status == 0
    lines = log.read_text().splitlines()
    assert lines and all(line.startswith("orch-sync: error: ") for line in lines), lines


def test_ctrl_c_stops_a_foreground_daemon_with_130_and_sigterm_with_0(tmp_path):
    for sig, expected in ((signal.SIGINT, 130), (signal.SIGTERM, 0)):
        # SIGINT as a terminal would deliver it, even if this test runs with it ignored.
        p = start("daemon", preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            wait_until(lambda p=p: view.daemon_pid() == p.pid or p.poll() is not None,
                       what="the daemon to start")
        finally:
            p.send_signal(sig)
            out, err = p.communicate(timeout=30)
        assert (p.returncode, out, err) == (expected, "", "")


# --- control characters in tables ----------------------------------------------------------

def test_a_newline_in_a_worktree_path_stays_inside_its_row(run, tmp_path):
    repo = Repo(tmp_path / "r", branches=("a1",))
    weird = os.path.join(repo.root, "we\nird")
    git(repo.main, "worktree", "add", "-q", "-b", "weird", weird, "main")
    repo.commit("main", {"base": "b\n"})
    now = run("orch-sync", "now", f"--repo={repo.main}")
    assert now.returncode == 0, now.stderr
    status = run("orch-sync", "status")
    assert status.returncode == 0, status.stderr
    with open(view.status_path()) as f:
        status_file = f.read()
    for text in (now.stdout, status.stdout, status_file):
        lines = text.splitlines()
        [row] = [line for line in lines if "ird" in line]
        assert row.startswith("  we") and " weird " in row, text
        header = next(line for line in lines if line.lstrip().startswith("WORKTREE"))
        table = lines[lines.index(header):]
        assert len(table) == 4 and all(line.startswith("  ") for line in table), text


# --- arguments that are not UTF-8 ------------------------------------------------------------

def test_an_argument_that_is_not_utf8_is_65(run):
    r = run("orch-sync", "unmap", os.fsdecode(b"\xff"))
    assert (r.returncode, r.stdout) == (65, ""), r.stderr
    assert r.stderr.startswith("orch-sync: error: ") and "UTF-8" in r.stderr
