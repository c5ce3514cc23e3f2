"""orch-sync's moves under interference and crashes: an agent's edit, commit, branch
switch or index.lock between a pass's look and its move; a pass killed at every
step of a move (and of its recovery), then the next pass.  The engine's test
points (ORCH_SYNC_TEST_STEP) stop a real `orch-sync now` there: `exit` ends it
at once, as kill -9 does; `pause` holds it while the test acts as the agent."""

import glob
import json
import os
import subprocess
import sys

import pytest
from conftest import wait_until
from gitrepo import Repo, git, snapshot, write

TOOL = os.path.join(os.path.dirname(sys.executable), "orch-sync")
FILES = {f"src/f{i:02d}.txt": f"{i}\n" for i in range(20)}
MOVE_STEPS = ("begin", "locked", "refresh", "update-index-running", "read-tree",
              "read-tree-running", "update-ref", "update-ref-running", "rename", "unlock")


@pytest.fixture
def repo(tmp_path):
    """a1 (nothing of its own: a fast-forward) and a2 (a commit of its own: a merge)
    behind a base commit that changes, adds and deletes files."""
    r = Repo(tmp_path / "r", branches=("a1", "a2"), files={**FILES, "gone.txt": "x\n"})
    r.commit("a2", {"mine.txt": "a2\n"})
    r.commit("main", {**{f"src/f{i:02d}.txt": f"{i} on main\n" for i in range(0, 20, 2)},
                      "new/dir/added.txt": "added\n", "gone.txt": None})
    return r


@pytest.fixture
def solo(tmp_path):
    """One worktree behind the base: the step a pass is stopped at is certainly its."""
    r = Repo(tmp_path / "solo", branches=("a1",), files=FILES)
    r.commit("main", {"src/f00.txt": "on main\n", "new.txt": "new\n"})
    return r


def gitdir(path):
    return git(path, "rev-parse", "--absolute-git-dir")


def journal_files():
    return glob.glob(os.path.join(os.environ["ORCH_HOME"], "sync", "moves", "*.json"))


def now(run, repo, step=None, **kw):
    env = {"ORCH_SYNC_TEST_STEP": step} if step else {}
    return run("orch-sync", "now", f"--repo={repo.main}", "--json", env=env, **kw)


def reasons(res):
    return {os.path.basename(r["path"]): r["reason"] for r in json.loads(res.stdout)}


class Paused:
    """`orch-sync now` held at STEP until go()."""

    def __init__(self, repo, step, where):
        self.where = str(where)
        env = dict(os.environ, ORCH_SYNC_TEST_STEP=f"{step}:pause={self.where}")
        self.proc = subprocess.Popen([TOOL, "now", f"--repo={repo.main}", "--json"], env=env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        wait_until(lambda: os.path.exists(os.path.join(self.where, step)) or
                   self.proc.poll() is not None, what=f"the pass to reach {step}")
        assert self.proc.poll() is None, self.proc.communicate()

    def go(self):
        write(os.path.join(self.where, "go"), "")
        out, err = self.proc.communicate(timeout=60)
        self.stdout, self.stderr, self.returncode = out, err, self.proc.returncode
        return self


def files(path):
    """The worktree's files (bytes and modes), without its index and HEAD."""
    return {k: v for k, v in snapshot(path).items() if not k.startswith("<")}


def consistent(path, base, before):
    """The worktree at PATH is whole: no lock of orch's left, its index is its HEAD's
    tree, its files are its index's, it contains BASE and every head it had."""
    gd = gitdir(path)
    assert not os.path.exists(os.path.join(gd, "index.lock")), "index.lock left"
    assert not glob.glob(os.path.join(gd, "index.orch-sync*")), "scratch index left"
    assert git(path, "diff-index", "--cached", "--quiet", "HEAD", check=False).returncode == 0
    assert git(path, "status", "--porcelain", "--untracked-files=all") == ""
    head = git(path, "rev-parse", "HEAD")
    for commit in (base, *before):
        assert git(path, "merge-base", "--is-ancestor", commit, head,
                   check=False).returncode == 0, f"{commit} lost from {path}"


# --- interference between the look and the move ---------------------------------------

def test_an_index_lock_taken_after_the_look_is_never_touched(run, repo, tmp_path):
    a1, old = repo.path("a1"), repo.head("a1")
    lock = os.path.join(gitdir(a1), "index.lock")
    paused = Paused(repo, "begin", tmp_path)
    write(lock, "the agent's git\n")
    res = paused.go()
    assert res.returncode == 1, res.stderr
    assert reasons(res)["a1"] == "index.lock held"
    assert repo.head("a1") == old and open(lock).read() == "the agent's git\n"
    assert journal_files() == []
    # A later pass leaves it alone too, until the agent's git lets go.
    res = now(run, repo)
    assert res.returncode == 1 and reasons(res)["a1"] == "index.lock held"
    assert open(lock).read() == "the agent's git\n"
    os.unlink(lock)
    assert now(run, repo).returncode == 0
    consistent(a1, repo.head("main"), [old])


def test_a_branch_switch_after_the_look_stops_the_move(run, repo, tmp_path):
    a1, old = repo.path("a1"), repo.head("a1")
    paused = Paused(repo, "begin", tmp_path)
    git(a1, "switch", "-q", "-c", "side")  # the same commit: only HEAD changes
    res = paused.go()
    assert res.returncode == 1, res.stderr
    assert reasons(res)["a1"] == "HEAD changed while syncing; will retry"
    assert repo.head("a1") == old and git(a1, "rev-parse", "refs/heads/side") == old
    assert journal_files() == []


@pytest.mark.parametrize("step", ["listed", "begin"])
def test_a_commit_after_the_worktree_list_stops_the_move(run, solo, tmp_path, step):
    """A commit that lands after the pass listed the worktrees: before its look
    (the look then sees the new index as current) or after it."""
    a1 = solo.path("a1")
    paused = Paused(solo, step, tmp_path)
    mine = solo.commit("a1", {"src/f00.txt": "the agent's\n"})  # a file the move changes
    res = paused.go()
    assert res.returncode == 1, res.stderr
    assert reasons(res)["a1"] == "the branch moved while syncing; will retry"
    assert solo.head("a1") == mine
    assert git(a1, "diff-index", "--cached", "--quiet", "HEAD", check=False).returncode == 0
    assert git(a1, "status", "--porcelain") == ""
    assert open(os.path.join(a1, "src/f00.txt")).read() == "the agent's\n"
    assert journal_files() == []


def test_staged_work_after_the_look_stops_the_move(run, repo, tmp_path):
    a1, old = repo.path("a1"), repo.head("a1")
    paused = Paused(repo, "begin", tmp_path)
    write(os.path.join(a1, "src/f01.txt"), "staged by the agent\n")  # not one the move changes
    git(a1, "add", "src/f01.txt")
    res = paused.go()
    assert res.returncode == 1, res.stderr
    assert reasons(res)["a1"] == "the index changed while syncing (a commit or git add); " \
        "will retry"
    assert repo.head("a1") == old
    assert git(a1, "diff", "--cached", "--name-only") == "src/f01.txt"
    assert journal_files() == []


def test_an_edit_after_the_look_stops_the_move(run, repo, tmp_path):
    a1, old = repo.path("a1"), repo.head("a1")
    paused = Paused(repo, "refresh", tmp_path)  # the lock is held: files can still change
    write(os.path.join(a1, "src/f03.txt"), "edited by the agent\n")
    res = paused.go()
    assert res.returncode == 1, res.stderr
    assert reasons(res)["a1"] == "uncommitted changes"
    assert repo.head("a1") == old
    assert open(os.path.join(a1, "src/f03.txt")).read() == "edited by the agent\n"
    assert not os.path.exists(os.path.join(gitdir(a1), "index.lock"))
    assert journal_files() == []


def test_a_branch_moved_by_someone_else_mid_move_is_kept_and_the_files_put_back(
        run, solo, tmp_path):
    repo = solo
    a1, old = repo.path("a1"), repo.head("a1")
    before = files(a1)
    theirs = git(repo.main, "commit-tree", f"{old}^{{tree}}", "-p", old, "-m", "theirs")
    paused = Paused(repo, "update-ref", tmp_path)  # the files are written already
    assert files(a1) != before
    git(repo.main, "update-ref", "refs/heads/a1", theirs, old)  # no index is involved
    res = paused.go()
    assert res.returncode == 1, res.stderr
    assert reasons(res)["a1"] == "the branch moved while syncing; will retry"
    assert repo.head("a1") == theirs  # never overwritten
    assert files(a1) == before  # the files went back to what its index says
    assert git(a1, "diff-index", "--cached", "--quiet", old, check=False).returncode == 0
    assert not os.path.exists(os.path.join(gitdir(a1), "index.lock"))
    assert journal_files() == []


# --- crashes ---------------------------------------------------------------------------

@pytest.mark.parametrize("step", MOVE_STEPS)
def test_a_pass_killed_at_any_step_leaves_what_the_next_pass_settles(run, repo, step):
    base = repo.head("main")
    before = {b: repo.head(b) for b in ("a1", "a2")}
    res = now(run, repo, step=f"{step}:exit")
    assert res.returncode == 137, res.stderr
    # Written down before anything of the worktree's is touched (at "begin", nothing is).
    assert step == "begin" or journal_files(), "the move was not written down"
    res = now(run, repo)
    assert res.returncode == 0, res.stderr
    for branch in ("a1", "a2"):
        consistent(repo.path(branch), base, [before[branch]])
    assert journal_files() == []
    assert git(repo.main, "fsck", "--no-progress", check=False).returncode == 0


@pytest.mark.parametrize("step", ("settle", "update-index-running", "converged", "settled"))
def test_a_recovery_killed_at_any_step_is_settled_by_the_next(run, repo, step):
    base = repo.head("main")
    before = {b: repo.head(b) for b in ("a1", "a2")}
    assert now(run, repo, step="update-ref:exit").returncode == 137  # files new, branch old
    res = now(run, repo, step=f"{step}:exit")
    assert res.returncode == 137, res.stderr
    res = now(run, repo)
    assert res.returncode == 0, res.stderr
    for branch in ("a1", "a2"):
        consistent(repo.path(branch), base, [before[branch]])
    assert journal_files() == []


def test_status_settles_a_dead_pass_and_a_crash_after_the_branch_moved_finishes(run, solo):
    repo = solo
    base = repo.head("main")
    assert run("orch-sync", "install", f"--repo={repo.main}").returncode == 0
    assert now(run, repo, step="rename:exit").returncode == 137  # branch moved, index old
    a1 = repo.path("a1")
    assert repo.head("a1") == base
    assert os.path.exists(os.path.join(gitdir(a1), "index.lock"))
    res = run("orch-sync", "status", f"--repo={repo.main}")
    assert "finished an interrupted update" in res.stderr, res.stderr
    assert not os.path.exists(os.path.join(gitdir(a1), "index.lock"))
    assert git(a1, "diff-index", "--cached", "--quiet", "HEAD", check=False).returncode == 0
    assert git(a1, "status", "--porcelain") == ""
    assert journal_files() == []


@pytest.mark.parametrize("step", ["update-ref-running", "update-ref-started"])
def test_recovery_waits_for_the_git_child_a_dead_pass_left_running(run, repo, step):
    """The user's reference-transaction hook (chained behind ours) makes update-ref
    slow; the pass dies while it runs; the child finishes the branch move after
    the pass is gone, and recovery must see that move, not the state before it --
    also when the pass died before it could write the child's pid down."""
    base = repo.head("main")
    before = {b: repo.head(b) for b in ("a1", "a2")}
    hook = os.path.join(repo.main, ".git", "hooks", "reference-transaction")
    write(hook, "#!/bin/sh\n[ \"$1\" = prepared ] && [ -n \"$ORCH_SYNC_QUIET\" ] && sleep 1\n"
                "exit 0\n")
    os.chmod(hook, 0o755)
    assert run("orch-sync", "install", f"--repo={repo.main}").returncode == 0
    assert now(run, repo, step=f"{step}:exit").returncode == 137
    res = now(run, repo)
    assert res.returncode == 0, res.stderr
    for branch in ("a1", "a2"):
        consistent(repo.path(branch), base, [before[branch]])


def test_a_foreign_lock_after_a_crash_is_never_touched(run, solo):
    repo = solo
    a1 = repo.path("a1")
    assert now(run, repo, step="update-ref:exit").returncode == 137
    lock = os.path.join(gitdir(a1), "index.lock")
    os.unlink(lock)  # the agent followed git's advice...
    write(lock, "the agent's git\n")  # ...and its next command holds the lock now
    res = now(run, repo)
    assert res.returncode == 1
    assert "index.lock held" in reasons(res)["a1"]
    assert open(lock).read() == "the agent's git\n"
    # The same inode, as a file made right after ours was removed can get, holding
    # something else: still not ours.
    with open(lock, "w") as f:
        f.write("the agent's git again\n")
    res = now(run, repo)
    assert res.returncode == 1 and "index.lock held" in reasons(res)["a1"]
    assert open(lock).read() == "the agent's git again\n"
    os.unlink(lock)
    assert now(run, repo).returncode == 0
    consistent(a1, repo.head("main"), [])
    assert journal_files() == []


def test_the_same_inode_with_other_content_is_not_our_lock(run, solo):
    repo = solo
    a1 = repo.path("a1")
    assert now(run, repo, step="update-ref:exit").returncode == 137
    lock = os.path.join(gitdir(a1), "index.lock")
    with open(lock, "r+") as f:  # our inode, rewritten: as a reused inode number would be
        f.truncate(0)
        f.write("the agent's git\n")
    res = now(run, repo)
    assert res.returncode == 1 and reasons(res)["a1"] == "index.lock held"
    assert open(lock).read() == "the agent's git\n"


def test_a_read_tree_that_dies_half_way_is_undone(run, repo):
    """A file size limit (as a full disk would) kills read-tree while it writes the
    last, largest file: the files it wrote before are put back."""
    import resource
    repo.commit("main", {"zz-big.txt": "x" * (4 << 20)})
    before = {b: files(repo.path(b)) for b in ("a1", "a2")}
    heads = {b: repo.head(b) for b in ("a1", "a2")}

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    proc = subprocess.run([TOOL, "now", f"--repo={repo.main}", "--json"], env=dict(os.environ),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          preexec_fn=small_files, timeout=60)
    assert proc.returncode == 1, proc.stderr
    rows = {os.path.basename(r["path"]): r for r in json.loads(proc.stdout)}
    for b in ("a1", "a2"):
        assert rows[b]["reason"].startswith("the worktree changed while syncing"), rows[b]
        assert repo.head(b) == heads[b] and files(repo.path(b)) == before[b]
        assert git(repo.path(b), "diff-index", "--cached", "--quiet", "HEAD",
                   check=False).returncode == 0
        assert not os.path.exists(os.path.join(gitdir(repo.path(b)), "index.lock"))
    assert journal_files() == []
    assert now(run, repo).returncode == 0
    for b in ("a1", "a2"):
        consistent(repo.path(b), repo.head("main"), [heads[b]])
