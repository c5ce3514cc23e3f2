"""Seeded random histories across four agent worktrees, interleaved with sync passes:
no commit is ever lost, no uncommitted change is ever touched, and every clean branch
that can merge the base cleanly ends up containing it."""

import os
import random
import sys

import pytest
from gitrepo import Repo, git, snapshot, write

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))

from orch import git as orch_git  # noqa: E402
from orch import store  # noqa: E402
from orch.sync import passes, view  # noqa: E402

AGENTS = ("a1", "a2", "a3", "a4")
FILES = ("one.txt", "two.txt", "three.txt", "four.txt", "five.txt", "six.txt")
LINES = 8
STEPS = 45


def edit(rnd, path, tag):
    """Change one random line of one random file (so edits sometimes collide)."""
    name = rnd.choice(FILES)
    full = os.path.join(path, name)
    with open(full) as f:
        lines = f.read().splitlines()
    lines[rnd.randrange(LINES)] = tag
    write(full, "\n".join(lines) + "\n")
    return name


@pytest.mark.parametrize("seed", [11, 23, 37])
def test_random_histories_keep_every_commit_and_every_edit(tmp_path, seed):
    rnd = random.Random(seed)
    repo = Repo(tmp_path / "r", branches=AGENTS,
                files={name: "".join(f"{name} line {i}\n" for i in range(LINES))
                       for name in FILES})
    r = orch_git.repo(repo.main)
    conn = store.connect()
    made = {branch: [repo.head(branch)] for branch in ("main", *AGENTS)}
    dirty = set()
    counter = 0

    def tag():
        nonlocal counter
        counter += 1
        return f"change {counter} (seed {seed})"

    def commit(branch):
        path = repo.path(branch)
        if branch not in dirty:
            edit(rnd, path, tag())
        git(path, "add", "-A")
        git(path, "commit", "-q", "-m", tag())
        dirty.discard(branch)
        made[branch].append(repo.head(branch))

    def make_dirty(branch):
        path = repo.path(branch)
        kind = rnd.choice(["unstaged", "staged", "untracked"])
        if kind == "untracked":
            write(os.path.join(path, f"scratch-{counter}.txt"), tag() + "\n")
        else:
            name = edit(rnd, path, tag())
            if kind == "staged":
                git(path, "add", name)
        dirty.add(branch)

    def resolve(branch):
        """The agent merges the base itself, taking its own side of any conflict."""
        path = repo.path(branch)
        if branch in dirty:
            return
        git(path, "merge", "-q", "--no-edit", "-X", "ours", "main")
        made[branch].append(repo.head(branch))

    def sync_pass(policy=None):
        before = {b: snapshot(repo.path(b)) for b in dirty}
        heads = {b: repo.head(b) for b in AGENTS}
        policy = policy or rnd.choice(["merge", "merge", "ff-only"])
        git(repo.main, "config", "orch.policy", policy)
        outcomes, _ = passes.sync_pass(conn, r)
        for b in dirty:
            assert snapshot(repo.path(b)) == before[b], f"{b} was touched while dirty"
            assert repo.head(b) == heads[b]
        for o in outcomes:
            branch = os.path.basename(o["path"])
            if o["state"] == "updated":
                assert branch not in dirty
                assert git(o["path"], "status", "--porcelain") == ""
                made[branch].append(o["head"])
            elif branch != "main" and o["state"] != "synced":
                assert repo.head(branch) == heads[branch]
        for branch, commits in made.items():
            for commit in commits:
                assert repo.contains(branch, commit), f"{commit} lost from {branch}"

    actions = [(commit, "main", 3), (commit, None, 5), (make_dirty, None, 3),
               (resolve, None, 2), (sync_pass, None, 4)]
    weights = [w for _, _, w in actions]
    for _ in range(STEPS):
        action, branch, _ = rnd.choices(actions, weights)[0]
        if action is sync_pass:
            sync_pass()
        else:
            action(branch or rnd.choice(AGENTS))

    for branch in sorted(dirty):
        commit(branch)
    sync_pass("merge")
    sync_pass("merge")
    main = repo.head("main")
    for branch in AGENTS:
        head = repo.head(branch)
        _, files = orch_git.merge_tree(repo.main, head, main)
        if not files:
            assert repo.contains(branch, main), f"{branch} can merge the base but lacks it"
        else:
            row = next(o for o in view.recorded_status(conn) if o["branch"] == branch)
            assert row["state"] == "conflict" and row["files"] == files
