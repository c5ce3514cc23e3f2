"""orch-sync hooks: install/uninstall round trip, chaining, every event kind, and a hook
that can never fail or hang a git command."""

import os
import shutil
import stat
import subprocess
import sys

import pytest
from gitrepo import Repo, fire_hooks, git, tree_bytes, write

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, os.path.join(ROOT, "lib"))

from orch import git as orch_git  # noqa: E402
from orch.sync import events as sync_events  # noqa: E402
from orch.sync import hooks as sync_hooks  # noqa: E402

USER_RT = """#!/bin/sh
# the user's own reference-transaction hook: logs its input, refuses refs/heads/blocked
log="$(dirname "$0")/../user-rt.log"
while read -r old new ref; do
    echo "$1 $ref" >> "$log"
    if [ "$1" = prepared ] && [ "$ref" = refs/heads/blocked ]; then exit 1; fi
done
exit 0
"""
USER_PC = """#!/bin/sh
echo "post-checkout $3" >> "$(dirname "$0")/../user-pc.log"
exit 3
"""


def events_file(repo_dir):
    return sync_events.events_path(orch_git.repo(repo_dir))


def events(repo_dir):
    try:
        with open(events_file(repo_dir)) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def clear(repo_dir):
    open(events_file(repo_dir), "w").close()


@pytest.fixture
def repo(tmp_path):
    return Repo(tmp_path / "r", branches=("a1", "a2"))


def hooks_dir(repo):
    return os.path.join(repo.main, ".git", "hooks")


def test_install_uninstall_round_trip_restores_user_hooks_byte_for_byte(run, repo):
    hooks = hooks_dir(repo)
    write(os.path.join(hooks, "reference-transaction"), USER_RT)
    os.chmod(os.path.join(hooks, "reference-transaction"), 0o751)
    write(os.path.join(repo.main, "pc-target"), USER_PC)
    os.chmod(os.path.join(repo.main, "pc-target"), 0o755)
    os.symlink(os.path.join(repo.main, "pc-target"), os.path.join(hooks, "post-checkout"))
    before = tree_bytes(hooks)

    first = run("orch-sync", "install", f"--repo={repo.path('a1')}")
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == os.path.realpath(hooks)
    installed = tree_bytes(hooks)
    assert installed["reference-transaction.orch-chained"] == before["reference-transaction"]
    assert installed["post-checkout.orch-chained"] == before["post-checkout"]
    assert sync_hooks.is_ours(os.path.join(hooks, "reference-transaction"))

    again = run("orch-sync", "install", f"--repo={repo.main}")  # idempotent
    assert again.returncode == 0, again.stderr
    assert tree_bytes(hooks) == installed

    gone = run("orch-sync", "uninstall", f"--repo={repo.path('a2')}")
    assert gone.returncode == 0, gone.stderr
    assert tree_bytes(hooks) == before
    assert not os.path.exists(events_file(repo.main))


def test_uninstall_without_user_hooks_leaves_the_directory_as_it_was(run, repo):
    hooks = hooks_dir(repo)
    before = tree_bytes(hooks)
    assert run("orch-sync", "install", f"--repo={repo.main}").returncode == 0
    assert set(tree_bytes(hooks)) - set(before) == {"reference-transaction", "post-checkout"}
    assert run("orch-sync", "uninstall", f"--repo={repo.main}").returncode == 0
    assert tree_bytes(hooks) == before


def test_chained_hooks_keep_their_input_and_exit_status(run, repo):
    hooks = hooks_dir(repo)
    write(os.path.join(hooks, "reference-transaction"), USER_RT)
    write(os.path.join(hooks, "post-checkout"), USER_PC)
    for name in ("reference-transaction", "post-checkout"):
        os.chmod(os.path.join(hooks, name), 0o755)
    a1 = repo.path("a1")
    # git turns a failing post-checkout into a failing checkout: note how, without orch-sync.
    plain = git(a1, "switch", "-q", "-c", "plain", check=False).returncode
    assert plain != 0
    git(a1, "switch", "-q", "a1", check=False)   # fails the same way, but switches
    assert git(a1, "branch", "--show-current") == "a1"
    assert run("orch-sync", "install", f"--repo={repo.main}").returncode == 0
    clear(repo.main)

    repo.commit("a1", {"f": "1\n"})
    with open(os.path.join(repo.main, ".git", "user-rt.log")) as f:
        log = f.read().splitlines()
    assert "prepared refs/heads/a1" in log and "committed refs/heads/a1" in log
    assert "committed HEAD" in log  # the whole input reached the chained hook
    assert any("\trefs/heads/a1\t" in line for line in events(repo.main))

    # The user's hook still vetoes an update at "prepared": git fails the command.
    refused = git(a1, "branch", "blocked", check=False)
    assert refused.returncode != 0
    assert git(a1, "rev-parse", "-q", "--verify", "refs/heads/blocked", check=False).stdout == ""

    # post-checkout's status is the checkout's status, as without orch-sync.
    switched = git(a1, "switch", "-q", "-c", "other", check=False)
    assert switched.returncode == plain
    assert any(line.startswith("post-checkout\t") for line in events(repo.main))
    with open(os.path.join(repo.main, ".git", "user-pc.log")) as f:
        assert f.read().splitlines() == ["post-checkout 1"] * 3


def test_every_way_a_branch_moves_is_recorded(run, tmp_path, repo):
    assert run("orch-sync", "install", f"--repo={repo.main}").returncode == 0
    a1, a2 = repo.path("a1"), repo.path("a2")
    origin = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(origin))
    git(repo.main, "remote", "add", "origin", str(origin))
    git(repo.main, "push", "-q", "origin", "main")
    repo.commit("a2", {"pick": "p\n"})
    pick = repo.head("a2")

    def recorded(action, expect):
        clear(repo.main)
        action()
        lines = events(repo.main)
        assert any(expect in line for line in lines), (expect, lines)

    recorded(lambda: repo.commit("a1", {"x": "1\n"}), "\trefs/heads/a1\t")
    recorded(lambda: repo.commit("main", {"m": "1\n"}), "\trefs/heads/main\t")
    recorded(lambda: git(a1, "merge", "-q", "--no-edit", "main"), "\trefs/heads/a1\t")
    recorded(lambda: git(a1, "cherry-pick", pick), "\trefs/heads/a1\t")
    recorded(lambda: git(a1, "reset", "-q", "--hard", "HEAD~1"), "\trefs/heads/a1\t")
    repo.commit("main", {"m2": "2\n"})
    recorded(lambda: git(a2, "rebase", "-q", "main"), "\trefs/heads/a2\t")
    recorded(lambda: git(a1, "commit", "-q", "--amend", "-m", "amended"), "\trefs/heads/a1\t")
    # Another clone pushes; fetch and pull here move remote-tracking and local branches.
    other = tmp_path / "other"
    git(tmp_path, "clone", "-q", str(origin), str(other))
    write(os.path.join(other, "o"), "o\n")
    git(other, "add", "o")
    git(other, "commit", "-q", "-m", "o")
    git(other, "push", "-q", "origin", "main")
    recorded(lambda: git(repo.main, "fetch", "-q", "origin"), "\trefs/remotes/origin/main\t")
    write(os.path.join(other, "o2"), "o2\n")
    git(other, "add", "o2")
    git(other, "commit", "-q", "-m", "o2")
    git(other, "push", "-q", "origin", "main")
    recorded(lambda: git(repo.main, "pull", "-q", "--no-rebase", "origin", "main"),
             "\trefs/heads/main\t")
    recorded(lambda: git(a1, "branch", "-f", "side", "main"), "\trefs/heads/side\t")
    # A branch switch moves no ref: post-checkout reports it; so does a new worktree.
    recorded(lambda: git(a1, "switch", "-q", "side"), "post-checkout\t")
    recorded(lambda: git(repo.main, "worktree", "add", "-q", str(tmp_path / "r" / "a3"), "a1"),
             "post-checkout\t")
    # Nothing for updates that move no branch (tags), and nothing at "prepared" alone.
    clear(repo.main)
    git(a2, "tag", "t1")
    assert events(repo.main) == []


def test_the_hook_ignores_prepared_and_aborted_and_never_fails(run, repo):
    assert run("orch-sync", "install", f"--repo={repo.main}").returncode == 0
    hook = os.path.join(hooks_dir(repo), "reference-transaction")
    clear(repo.main)
    for phase in ("prepared", "aborted", "committed", "bogus"):
        proc = subprocess.run([hook, phase], input=f"{'0' * 40} {'1' * 40} refs/heads/x\n",
                              capture_output=True, text=True, cwd=repo.main, timeout=10)
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    assert len(events(repo.main)) == 1
    # Our own git commands (ORCH_SYNC_QUIET) are not events.
    clear(repo.main)
    git(repo.path("a1"), "commit", "-q", "--allow-empty", "-m", "quiet",
        env={"ORCH_SYNC_QUIET": "1"})
    assert events(repo.main) == []


@pytest.mark.parametrize("breakage", ["under-a-file", "read-only-dir", "directory", "fifo"])
def test_a_commit_never_fails_or_hangs_when_the_event_cannot_be_recorded(run, repo, breakage):
    assert run("orch-sync", "install", f"--repo={repo.main}").returncode == 0
    path = events_file(repo.main)
    sync = os.path.dirname(path)
    if breakage == "under-a-file":
        # chmod does not stop root (the tests may run as root): a path below a regular
        # file cannot be opened by anyone (ENOTDIR).
        shutil.rmtree(sync)
        write(sync, "not a directory\n")
    elif breakage == "read-only-dir":
        os.unlink(path)
        os.chmod(sync, 0o500)  # effective for a non-root user; for root the file is gone
    elif breakage == "directory":
        os.unlink(path)
        os.mkdir(path)
    else:
        os.unlink(path)
        os.mkfifo(path)  # nobody reads it: opening it for writing would block forever
    a1 = repo.path("a1")
    fire_hooks(a1)
    if breakage == "read-only-dir":
        os.chmod(sync, 0o700)
    assert git(a1, "log", "-1", "--format=%s") == "still works"


def test_hooks_fire_from_every_worktree_and_core_hookspath_is_honoured(run, tmp_path, repo):
    shared = tmp_path / "shared-hooks"
    git(repo.main, "config", "core.hooksPath", str(shared))
    done = run("orch-sync", "install", f"--repo={repo.path('a2')}")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(shared)
    assert sorted(os.listdir(shared)) == ["post-checkout", "reference-transaction"]
    assert not os.path.exists(os.path.join(repo.main, ".git", "hooks", "reference-transaction"))
    clear(repo.main)
    repo.commit("a2", {"f": "2\n"})
    assert any("\trefs/heads/a2\t" in line for line in events(repo.main))
    assert run("orch-sync", "uninstall", f"--repo={repo.main}").returncode == 0
    assert not shared.exists()  # install created it; uninstall removed it again

    git(repo.main, "config", "core.hooksPath", ".githooks")
    refused = run("orch-sync", "install", f"--repo={repo.main}")
    assert refused.returncode == 69
    assert "core.hooksPath is relative" in refused.stderr


def test_install_refuses_to_overwrite_an_unknown_chained_hook(run, repo):
    hooks = hooks_dir(repo)
    for name in ("post-checkout", "post-checkout.orch-chained"):
        write(os.path.join(hooks, name), "#!/bin/sh\nexit 0\n")
    before = tree_bytes(hooks)
    refused = run("orch-sync", "install", f"--repo={repo.main}")
    assert refused.returncode == 73
    assert "post-checkout.orch-chained exists" in refused.stderr
    assert tree_bytes(hooks) == before  # checked before anything was changed


def test_hook_scripts_are_posix_sh_and_shellcheck_clean():
    shellcheck = shutil.which("shellcheck") or os.path.join(os.path.dirname(sys.executable),
                                                            "shellcheck")
    hooks = [os.path.join(ROOT, "hooks", name) for name in sync_hooks.HOOKS]
    for path in hooks:
        with open(path) as f:
            assert f.readline() == "#!/bin/sh\n"
        assert os.stat(path).st_mode & stat.S_IXUSR
    proc = subprocess.run([shellcheck, "-s", "sh", *hooks], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout
