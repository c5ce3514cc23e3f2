"""orch-sync passes: policies, the safety rules, predicted conflicts and telling agents,
the conflict matrix, separate clones, coalescing, and the daemon."""

import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys

import pytest
from conftest import wait_until
from gitrepo import Repo, git, snapshot, write

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))

from orch import git as orch_git  # noqa: E402
from orch import locks, store  # noqa: E402
from orch.sync import events as sync_events  # noqa: E402
from orch.sync import hooks as sync_hooks  # noqa: E402
from orch.sync import passes, repos, view  # noqa: E402


@pytest.fixture
def repo(tmp_path):
    return Repo(tmp_path / "r", branches=("a1", "a2"), files={"shared": "1\n2\n3\n"})


def status(run, repo_dir):
    res = run("orch-sync", "status", f"--repo={repo_dir}", "--json")
    return res.returncode, {os.path.basename(r["path"]): r for r in json.loads(res.stdout)}


def test_merge_policy_fast_forwards_and_merges_with_the_repository_identity(run, repo):
    repo.commit("a1", {"mine": "a1\n"})
    own = repo.head("a1")
    base = repo.commit("main", {"base": "b\n"})
    res = run("orch-sync", "now", f"--repo={repo.main}")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].startswith(f"{repo.main}  (base main, policy merge, hooks not installed")
    assert any(line.split()[0] == "a1" and line.endswith("updated: merged main")
               for line in lines[2:])
    assert any(line.endswith("updated: fast-forward to main") for line in lines[2:])

    assert repo.head("a2") == base  # nothing of its own: fast-forward
    merge = repo.head("a1")
    assert repo.parents(merge) == [own, base]
    fmt = git(repo.main, "log", "-1", "--format=%an <%ae>%n%cn <%ce>%n%B", merge).split("\n")
    assert fmt[0] == "Test Author <author@example.com>"
    assert fmt[1] == "Test Committer <committer@example.com>"
    assert "orch-sync" in "\n".join(fmt[2:])
    for branch in ("a1", "a2"):
        assert git(repo.path(branch), "status", "--porcelain") == ""
        with open(os.path.join(repo.path(branch), "base")) as f:
            assert f.read() == "b\n"
    code, rows = status(run, repo.main)
    assert code == 0
    assert rows["a1"]["state"] == "updated" and rows["a1"]["action"] == "merge"
    assert rows["a2"]["action"] == "fast-forward" and rows["a2"]["behind"] == 0
    assert rows["main"]["state"] == "synced"
    # The next pass finds everything current and changes nothing.
    again = run("orch-sync", "now", f"--repo={repo.main}", "--porcelain")
    assert again.returncode == 0
    assert [line.split("\t")[6] for line in again.stdout.splitlines()] == ["synced"] * 3
    assert repo.head("a1") == merge


def test_without_any_identity_merges_are_made_as_orch_sync(run, repo, monkeypatch):
    repo.commit("a1", {"mine": "a1\n"})
    repo.commit("main", {"base": "b\n"})
    for name in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME",
                 "GIT_COMMITTER_EMAIL"):
        monkeypatch.delenv(name)
    res = run("orch-sync", "now", f"--repo={repo.main}")
    assert res.returncode == 0, res.stderr
    who = git(repo.main, "log", "-1", "--format=%an <%ae>|%cn <%ce>", repo.head("a1"))
    assert who == "orch-sync <orch-sync@localhost>|orch-sync <orch-sync@localhost>"


def test_ff_only_and_report_policies(run, repo):
    repo.commit("a1", {"mine": "a1\n"})
    before_a1 = repo.head("a1")
    base = repo.commit("main", {"base": "b\n"})
    git(repo.main, "config", "orch.policy", "report")
    res = run("orch-sync", "now", f"--repo={repo.main}")
    assert res.returncode == 1
    assert repo.head("a1") == before_a1 and repo.head("a2") != base
    code, rows = status(run, repo.main)
    assert code == 1 and rows["a2"]["reason"] == "policy report: 1 behind main"

    git(repo.main, "config", "orch.policy", "ff-only")
    res = run("orch-sync", "now", f"--repo={repo.main}")
    assert res.returncode == 1
    assert repo.head("a2") == base and repo.head("a1") == before_a1
    code, rows = status(run, repo.main)
    assert code == 1 and rows["a1"]["state"] == "skipped"
    assert rows["a1"]["reason"].startswith("ff-only: diverged from main (1 ahead, 1 behind)")

    git(repo.main, "config", "orch.policy", "sideways")
    res = run("orch-sync", "now", f"--repo={repo.main}", "--json")
    assert res.returncode == 69 and "bad orch.policy" in res.stderr
    assert all("bad orch.policy" in r["reason"] for r in json.loads(res.stdout))


def test_rebase_policy_rewrites_only_unpublished_commits(run, repo):
    git(repo.main, "config", "orch.policy", "rebase")
    first = repo.commit("a1", {"one": "1\n"}, "one")
    repo.commit("a1", {"two": "2\n"}, "two")
    base = repo.commit("main", {"base": "b\n"})
    res = run("orch-sync", "now", f"--repo={repo.main}")
    assert res.returncode == 0, res.stderr
    log = git(repo.main, "log", "--format=%s|%an|%P", "main..a1").splitlines()
    assert [line.split("|")[0] for line in log] == ["two", "one"]
    assert log[1].split("|")[2] == base  # linear, on top of the base
    assert log[0].split("|")[1] == "Test Author"
    assert git(repo.path("a1"), "status", "--porcelain") == ""

    # A commit that is also on another branch is published: not rewritten.
    repo.commit("a2", {"three": "3\n"})
    git(repo.main, "branch", "keep", "a2")
    kept = repo.head("a2")
    repo.commit("main", {"base2": "b\n"})
    res = run("orch-sync", "now", f"--repo={repo.main}", "--json")
    assert res.returncode == 1
    rows = {os.path.basename(r["path"]): r for r in json.loads(res.stdout)}
    assert rows["a2"]["state"] == "skipped" and "another branch" in rows["a2"]["reason"]
    assert repo.head("a2") == kept
    assert repo.contains("a1", first) is False  # rewritten, as the policy says (reflog keeps it)

    # A replay that would conflict is never started.
    repo.commit("a1", {"shared": "1\nA1\n3\n"})
    mine = repo.head("a1")
    before = snapshot(repo.path("a1"))
    repo.commit("main", {"shared": "1\nMAIN\n3\n"})
    res = run("orch-sync", "now", f"--repo={repo.main}", "--json")
    rows = {os.path.basename(r["path"]): r for r in json.loads(res.stdout)}
    assert res.returncode == 1 and rows["a1"]["state"] == "conflict"
    assert rows["a1"]["files"] == ["shared"]
    assert repo.head("a1") == mine and snapshot(repo.path("a1")) == before


@pytest.mark.parametrize("kind", ["unstaged", "staged", "untracked"])
def test_a_dirty_worktree_is_left_untouched_byte_for_byte(run, repo, kind):
    a1 = repo.path("a1")
    if kind == "unstaged":
        write(os.path.join(a1, "shared"), "1\nlocal edit\n3\n")
    elif kind == "staged":
        write(os.path.join(a1, "new"), "staged\n")
        git(a1, "add", "new")
    else:
        write(os.path.join(a1, "scratch.txt"), "notes\n")
    before = snapshot(a1)
    repo.commit("main", {"base": "b\n"})
    res = run("orch-sync", "now", f"--repo={repo.main}", "--json")
    assert res.returncode == 1
    rows = {os.path.basename(r["path"]): r for r in json.loads(res.stdout)}
    assert rows["a1"]["state"] == "skipped" and rows["a1"]["reason"] == "uncommitted changes"
    assert rows["a1"]["dirty"] is True and rows["a2"]["state"] == "updated"
    assert snapshot(a1) == before


def test_ignored_files_are_not_changes_and_are_never_overwritten(run, repo):
    repo.commit("main", {".gitignore": "*.log\nlocal.cfg\n"})
    assert run("orch-sync", "now", f"--repo={repo.main}").returncode == 0
    a1 = repo.path("a1")
    write(os.path.join(a1, "build.log"), "ignored\n")
    write(os.path.join(a1, "local.cfg"), "the agent's own settings\n")
    repo.commit("main", {"other": "o\n"})
    res = run("orch-sync", "now", f"--repo={repo.main}")
    assert res.returncode == 0, res.stdout
    assert repo.head("a1") == repo.head("main")
    # The base now starts tracking a file the worktree has ignored: never overwritten.
    write(os.path.join(repo.main, "local.cfg"), "upstream\n")
    git(repo.main, "add", "-f", "local.cfg")
    git(repo.main, "commit", "-q", "-m", "track local.cfg")
    res = run("orch-sync", "now", f"--repo={repo.main}", "--json")
    rows = {os.path.basename(r["path"]): r for r in json.loads(res.stdout)}
    assert res.returncode == 1 and rows["a1"]["state"] == "skipped"
    with open(os.path.join(a1, "local.cfg")) as f:
        assert f.read() == "the agent's own settings\n"
    assert repo.head("a1") != repo.head("main")
    assert git(a1, "status", "--porcelain") == ""


def test_a_worktree_whose_index_is_locked_is_left_alone(run, repo):
    a1 = repo.path("a1")
    lock = os.path.join(git(a1, "rev-parse", "--absolute-git-dir"), "index.lock")
    write(lock, "")  # an agent's git command is running there
    before = snapshot(a1)
    repo.commit("main", {"base": "b\n"})
    res = run("orch-sync", "now", f"--repo={repo.main}", "--json")
    assert res.returncode == 1
    rows = {os.path.basename(r["path"]): r for r in json.loads(res.stdout)}
    assert rows["a1"]["reason"] == "index.lock held"
    assert snapshot(a1) == before and os.path.exists(lock)
    os.unlink(lock)
    assert run("orch-sync", "now", f"--repo={repo.main}").returncode == 0
    assert repo.head("a1") == repo.head("main")


def test_worktrees_mid_operation_or_detached_are_left_alone(run, repo):
    a1, a2 = repo.path("a1"), repo.path("a2")
    repo.add_worktree("a3")
    repo.commit("a1", {"shared": "1\nA1\n3\n"})
    repo.commit("a3", {"shared": "1\nA3\n3\n"})
    repo.commit("main", {"shared": "1\nMAIN\n3\n"})
    stopped = git(a1, "rebase", "main", check=False)
    assert stopped.returncode != 0  # stopped on the conflict: a rebase is in progress
    git(a2, "switch", "-q", "--detach", "HEAD")
    merging = git(repo.path("a3"), "merge", "main", check=False)
    assert merging.returncode != 0  # stopped on the conflict: a merge is in progress
    before = {b: snapshot(repo.path(b)) for b in ("a1", "a2", "a3")}
    res = run("orch-sync", "now", f"--repo={repo.main}", "--json")
    assert res.returncode == 1
    rows = {os.path.basename(r["path"]): r for r in json.loads(res.stdout)}
    assert rows["a1"]["reason"] == "rebase in progress"
    assert rows["a2"]["reason"] == "detached HEAD"
    assert rows["a3"]["reason"] == "merge in progress"
    assert {b: snapshot(repo.path(b)) for b in ("a1", "a2", "a3")} == before


def test_a_predicted_conflict_changes_nothing_and_tells_the_mapped_agent_once(run, repo):
    a1 = repo.path("a1")
    repo.commit("a1", {"shared": "1\nA1\n3\n", "other": "o\n"})
    mine = repo.head("a1")
    repo.commit("main", {"shared": "1\nMAIN\n3\n"})
    mapped = run("orch-sync", "map", a1, "agents:1")
    assert mapped.returncode == 0 and mapped.stdout.strip() == os.path.realpath(a1)
    before = snapshot(a1)
    res = run("orch-sync", "now", f"--repo={repo.main}", "--json")
    assert res.returncode == 1
    rows = {os.path.basename(r["path"]): r for r in json.loads(res.stdout)}
    assert rows["a1"]["state"] == "conflict" and rows["a1"]["files"] == ["shared"]
    assert rows["a1"]["target"] == "agents:1"
    assert repo.head("a1") == mine and snapshot(a1) == before

    def checkins():
        listed = run("orch-sched", "list", "--json")
        assert listed.returncode == 0
        return json.loads(listed.stdout)

    # Two conflicts for a1: with the base, and with a2 (fast-forwarded to the base).
    told = sorted(checkins(), key=lambda t: t["note"])
    assert [t["target"] for t in told] == ["agents:1", "agents:1"]
    assert "your branch a1 and a2" in told[0]["note"] and "shared" in told[0]["note"]
    assert "would conflict with main in shared" in told[1]["note"]
    assert run("orch-sync", "now", f"--repo={repo.main}").returncode == 1
    assert len(checkins()) == 2  # the same conflicts are not told again
    conn = store.connect()
    recorded = view.recorded_conflicts(conn)
    assert [(c["a"], c["b"], c["files"]) for c in recorded] == [("a1", "a2", ["shared"]),
                                                               ("a1", "main", ["shared"])]
    # A new file in conflict is news: the agent is told again (the pending note is updated).
    repo.commit("main", {"other": "main's other\n"})
    assert run("orch-sync", "now", f"--repo={repo.main}").returncode == 1
    notes = [t["note"] for t in checkins()]
    assert len(notes) == 2 and any("other, shared" in n for n in notes)
    # Resolving it (the agent merges by hand) closes the record.
    assert git(a1, "merge", "main", check=False).returncode != 0   # it conflicts
    write(os.path.join(a1, "shared"), "1\nboth\n3\n")
    git(a1, "commit", "-q", "-am", "resolve")
    assert run("orch-sync", "now", f"--repo={repo.main}").returncode == 0
    assert view.recorded_conflicts(conn) == []
    assert run("orch-sync", "unmap", a1).returncode == 0
    assert run("orch-sync", "unmap", a1).returncode == 1


def test_a_pass_that_cannot_see_its_base_leaves_conflicts_as_they_were(run, repo):
    a1 = repo.path("a1")
    repo.commit("a1", {"shared": "1\nA1\n3\n"})
    repo.commit("main", {"shared": "1\nMAIN\n3\n"})
    assert run("orch-sync", "map", a1, "agents:1").returncode == 0
    assert run("orch-sync", "now", f"--repo={repo.main}").returncode == 1
    listed = run("orch-sched", "list", "--porcelain")
    told = [line.split("\t")[0] for line in listed.stdout.splitlines()]
    assert listed.returncode == 0 and len(told) == 2
    assert run("orch-sched", "cancel", *told).returncode == 0  # as if both were delivered
    conn = store.connect()
    before = view.recorded_conflicts(conn, open_only=False)
    assert {c["status"] for c in before} == {"open"}
    for key, value in (("orch.base", "no-such-branch"), ("orch.policy", "sideways")):
        git(repo.main, "config", key, value)
        res = run("orch-sync", "now", f"--repo={repo.main}")
        assert res.returncode == 69 and value in res.stderr
        assert view.recorded_conflicts(conn, open_only=False) == before
        git(repo.main, "config", "--unset", key)
    # The next good pass finds the same conflicts: nothing reopened, nobody told again.
    assert run("orch-sync", "now", f"--repo={repo.main}").returncode == 1
    after = view.recorded_conflicts(conn, open_only=False)
    assert [(c["a"], c["b"], c["status"], c["first_seen"]) for c in after] == \
        [(c["a"], c["b"], c["status"], c["first_seen"]) for c in before]
    listed = run("orch-sched", "list", "--porcelain")
    assert listed.returncode == 0 and listed.stdout == ""


def test_the_conflict_matrix(run, repo):
    repo.add_worktree("a3")
    repo.commit("a1", {"x": "a1\n", "shared": "1\nA1\n3\n"})
    repo.commit("a2", {"x": "a2\n"})
    repo.commit("a3", {"y": "a3\n"})
    repo.commit("main", {"shared": "1\nMAIN\n3\n", "z": "z\n"})
    res = run("orch-sync", "conflicts", f"--repo={repo.path('a3')}", "--json")
    assert res.returncode == 1
    pairs = {(p["a"], p["b"]): p for p in json.loads(res.stdout)}
    assert set(pairs) == {("a1", "a2"), ("a1", "a3"), ("a2", "a3"), ("a1", "main"),
                          ("a2", "main"), ("a3", "main")}
    assert pairs[("a1", "a2")]["files"] == ["x"] and not pairs[("a1", "a2")]["clean"]
    assert pairs[("a1", "main")]["files"] == ["shared"]
    assert all(pairs[k]["clean"] for k in pairs if k not in (("a1", "a2"), ("a1", "main")))
    porcelain = run("orch-sync", "conflicts", f"--repo={repo.main}", "--porcelain")
    assert porcelain.returncode == 1
    lines = porcelain.stdout.splitlines()
    assert "a1\ta2\tconflict\tx" in lines and "a1\tmain\tconflict\tshared" in lines
    assert "a2\ta3\tclean\t" in lines and len(lines) == 6
    # Nothing was changed by looking.
    assert repo.head("a2") != repo.head("main")
    table = run("orch-sync", "conflicts", f"--repo={repo.main}")
    assert table.returncode == 1 and "conflict: x" in table.stdout

    clean = Repo(repo.root + "-clean", branches=("b1", "b2"))
    clean.commit("b1", {"p": "1\n"})
    clean.commit("b2", {"q": "1\n"})
    ok = run("orch-sync", "conflicts", f"--repo={clean.main}", "--porcelain")
    assert ok.returncode == 0
    assert sorted(ok.stdout.splitlines()) == ["b1\tb2\tclean\t", "b1\tmain\tclean\t",
                                              "b2\tmain\tclean\t"]


def test_separate_clones_fetch_from_their_remote(run, tmp_path):
    origin = tmp_path / "origin.git"
    seed = Repo(tmp_path / "seed")
    git(tmp_path, "clone", "-q", "--bare", seed.main, str(origin))
    clones = {}
    for name in ("alice", "bob"):
        path = str(tmp_path / name)
        git(tmp_path, "clone", "-q", str(origin), path)
        git(path, "switch", "-q", "-c", f"{name}-work")
        write(os.path.join(path, f"{name}.txt"), f"{name}\n")
        git(path, "add", "-A")
        git(path, "commit", "-q", "-m", f"{name} works")
        git(path, "config", "orch.remote", "origin")
        assert run("orch-sync", "install", f"--repo={path}").returncode == 0
        clones[name] = path
    assert run("orch-sync", "run").returncode == 0  # nothing recorded yet: no-op
    # Alice lands work on main and pushes it; bob's clone learns of it through the remote.
    alice = clones["alice"]
    git(alice, "switch", "-q", "main")
    write(os.path.join(alice, "landed.txt"), "landed\n")
    git(alice, "add", "-A")
    git(alice, "commit", "-q", "-m", "landed")
    git(alice, "push", "-q", "origin", "main")
    git(alice, "switch", "-q", "alice-work")
    res = run("orch-sync", "run")
    assert res.returncode == 0, res.stderr
    landed = git(str(origin), "rev-parse", "main")
    bob = clones["bob"]
    assert git(bob, "merge-base", "--is-ancestor", landed, "bob-work", check=False).returncode == 0
    assert git(alice, "merge-base", "--is-ancestor", landed, "alice-work",
               check=False).returncode == 0
    with open(os.path.join(bob, "landed.txt")) as f:
        assert f.read() == "landed\n"
    code, rows = status(run, bob)
    assert code == 0 and rows["bob"]["base"] == "origin/main"


def test_events_during_a_pass_coalesce_into_one_more_pass(repo):
    hooks = os.path.join(repo.main, ".git", "hooks")
    conn = store.connect()
    r = orch_git.repo(repo.main)
    events = sync_events.events_path(r, create=True)
    flag = os.path.join(repo.root, "burst-done")
    # The user's own hook fires when the pass moves a branch: at that moment three more
    # events arrive, as from agents committing while the pass runs.
    write(os.path.join(hooks, "reference-transaction"), f"""#!/bin/sh
[ "$1" = committed ] && [ -n "$ORCH_SYNC_QUIET" ] || exit 0
[ -e '{flag}' ] && exit 0
: > '{flag}'
for i in 1 2 3; do printf 'reference-transaction\\trefs/heads/x\\t-\\n' >> '{events}'; done
""")
    os.chmod(os.path.join(hooks, "reference-transaction"), 0o755)
    sync_hooks.install(conn, r)
    for i in range(4):
        repo.commit("main", {f"m{i}": f"{i}\n"})  # four events before any pass
    with open(events) as f:
        assert len(f.read().splitlines()) == 4
    results = passes.process(r)
    assert len(results) == 2  # one pass for the four, exactly one more for the three
    assert os.path.exists(flag) and os.path.getsize(events) == 0
    assert repo.head("a1") == repo.head("main") == repo.head("a2")
    assert passes.process(r) == []  # nothing left


def test_one_pass_per_repository_at_a_time_and_repositories_in_parallel(run, tmp_path):
    one = Repo(tmp_path / "one", branches=("a1",))
    two = Repo(tmp_path / "two", branches=("b1",))
    for r in (one, two):
        assert run("orch-sync", "install", f"--repo={r.main}").returncode == 0
        r.commit("main", {"m": "m\n"})
    held = repos.lock_name(orch_git.repo(one.main))
    with locks.held(held):
        proc = subprocess.Popen(["orch-sync", "run"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            wait_until(lambda: two.head("b1") == two.head("main"), timeout=20,
                       what="the other repository to sync while this one is locked")
            assert one.head("a1") != one.head("main")
            assert proc.poll() is None  # waiting for the lock, not giving up
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert one.head("a1") == one.head("main")


def test_the_daemon_follows_commits_and_keeps_a_status_file(run, repo):
    assert run("orch-sync", "install", f"--repo={repo.main}").returncode == 0
    first = run("orch-sync", "daemon", "--detach")
    assert first.returncode == 0, first.stderr
    pid = int(first.stdout)
    again = run("orch-sync", "daemon", "--detach")
    assert again.returncode == 0 and int(again.stdout) == pid
    busy = run("orch-sync", "daemon")
    assert busy.returncode == 75
    for i in range(3):
        base = repo.commit("main", {"base": f"{i}\n"})
        wait_until(lambda b=base: repo.head("a1") == b and repo.head("a2") == b, timeout=20,
                   what="the daemon to bring both worktrees to the new base")
    status_file = view.status_path()
    wait_until(lambda: os.path.exists(status_file), what="the status file")
    with open(status_file) as f:
        text = f.read()
    assert text.startswith("orch-sync status at ") and f"\n{repo.main}  (base main" in text
    assert "\n  a1 " in text and "\n  a2 " in text


def stop(pid):
    os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not os.path.exists(f"/proc/{pid}") or
               open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z",
               what="the daemon to stop")


def test_the_hooks_never_wait_on_the_wake_fifo_when_no_daemon_reads_it(run, repo):
    assert run("orch-sync", "install", f"--repo={repo.main}").returncode == 0
    started = run("orch-sync", "daemon", "--detach")
    assert started.returncode == 0, started.stderr
    stop(int(started.stdout))
    fifo = sync_events.wake_path()
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)  # left behind, with nobody reading it
    write(os.path.join(repo.path("a1"), "work"), "w\n")
    git(repo.path("a1"), "add", "work")
    # A write-only open of the FIFO would block here until a reader came.
    proc = subprocess.run(["git", "-C", repo.path("a1"), "commit", "-q", "-m", "work"],
                          capture_output=True, timeout=20)
    assert proc.returncode == 0, proc.stderr
    r = orch_git.repo(repo.main)
    with open(sync_events.events_path(r)) as f:
        assert "refs/heads/a1" in f.read()


def test_an_event_as_a_pass_ends_starts_another_pass(run, repo, tmp_path):
    """An event that lands after the pass took its last events but before its thread
    ends: the daemon saw the worker alive and went to sleep; the worker's end must
    wake it, or the event waits for the next full pass (minutes)."""
    assert run("orch-sync", "install", f"--repo={repo.main}").returncode == 0
    env = {"ORCH_SYNC_TEST_STEP": f"passes-done:pause={tmp_path}"}
    started = run("orch-sync", "daemon", "--detach", env=env)
    assert started.returncode == 0, started.stderr
    wait_until(lambda: os.path.exists(tmp_path / "passes-done"), what="the first pass to end")
    base = repo.commit("main", {"late": "l\n"})  # its event (and wake-up) arrive now
    write(tmp_path / "go", "")
    wait_until(lambda: repo.head("a1") == base and repo.head("a2") == base, timeout=20,
               what="another pass for the event that came at the end of one")
    stop(int(started.stdout))


def test_a_worker_that_has_ended_its_work_is_not_waited_for(run, repo, tmp_path):
    """A worker thread that has finished its pass and woken the loop, but not yet
    returned: the loop must serve the next event now, not find the thread alive
    and sleep until the next full pass."""
    assert run("orch-sync", "install", f"--repo={repo.main}").returncode == 0
    env = {"ORCH_SYNC_TEST_STEP": f"worker-done:pause={tmp_path}"}
    started = run("orch-sync", "daemon", "--detach", env=env)
    assert started.returncode == 0, started.stderr
    try:
        wait_until(lambda: os.path.exists(tmp_path / "worker-done"), what="the first pass")
        base = repo.commit("main", {"next": "n\n"})  # while that thread still runs
        wait_until(lambda: repo.head("a1") == base and repo.head("a2") == base, timeout=20,
                   what="a pass for the event while the last worker thread lingers")
    finally:
        write(tmp_path / "go", "")
        stop(int(started.stdout))


def test_command_line_errors(run, tmp_path, repo):
    bad = run("orch-sync", "now", f"--repo={tmp_path}")
    assert bad.returncode == 65 and "not a git repository" in bad.stderr
    assert run("orch-sync", "frobnicate").returncode == 64
    missing = run("orch-sync", "run", f"--repo={repo.main}")
    assert missing.returncode == 69 and "not installed" in missing.stderr
    assert run("orch-sync", "map", repo.main, "s:w:x").returncode == 65
    nogit = run("orch-sync", "now", f"--repo={repo.main}",
                env={"PATH": os.path.dirname(sys.executable)})
    assert nogit.returncode == 69 and "git is not installed" in nogit.stderr
    nothing = run("orch-sync", "status", f"--repo={repo.main}")
    assert nothing.returncode == 1 and "no pass recorded" in nothing.stderr
    empty = run("orch-sync", "status", "--porcelain")
    assert (empty.returncode, empty.stdout) == (0, "")
    helped = run("orch-sync", "--help")
    assert helped.returncode == 0 and "orch-sync conflicts" in helped.stdout


def test_dashboard_functions_read_what_was_recorded(run, repo):
    repo.commit("main", {"base": "b\n"})
    assert run("orch-sync", "now", f"--repo={repo.main}").returncode == 0
    conn = store.connect()
    rows = view.recorded_status(conn)
    assert {os.path.basename(r["path"]): r["state"] for r in rows} == {
        "main": "synced", "a1": "updated", "a2": "updated"}
    repos = view.recorded_repos(conn)
    assert len(repos) == 1 and repos[0]["base"] == "main" and repos[0]["hooks"] is None
    assert view.recorded_conflicts(conn) == []
    assert view.daemon_pid() is None


def test_an_event_recomputes_only_the_pairs_whose_tips_moved(run, tmp_path):
    agents = [f"a{i}" for i in range(1, 7)]
    repo = Repo(tmp_path / "six", branches=agents)
    for name in agents:
        repo.commit(name, {f"{name}.txt": f"{name}\n"})
    t1, t2 = 1795636800, 1795636860

    def computed_at(t):
        conn = sqlite3.connect(os.path.join(os.environ["ORCH_HOME"], "orch.db"))
        try:
            return conn.execute("SELECT COUNT(*) FROM sync_predictions WHERE at = ?",
                                (t,)).fetchone()[0]
        finally:
            conn.close()

    assert run("orch-sync", "now", f"--repo={repo.main}", env={"ORCH_NOW": str(t1)}) \
        .returncode == 0
    assert computed_at(t1) == 15 + 6  # every pair of six branches, and each with the base
    repo.commit("a3", {"a3.txt": "moved\n"})
    assert run("orch-sync", "now", f"--repo={repo.main}", env={"ORCH_NOW": str(t2)}) \
        .returncode == 0
    assert computed_at(t2) == 5 + 1  # a3 with each other branch, and with the base
    conflicts = run("orch-sync", "conflicts", f"--repo={repo.main}", "--porcelain")
    assert conflicts.returncode == 0 and len(conflicts.stdout.splitlines()) == 21
