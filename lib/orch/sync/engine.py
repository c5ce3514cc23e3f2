"""The only code that moves a worktree: look, decide, move, recover.

Rules:
- A worktree is changed only if it is on a branch, has no staged, unstaged or
  untracked (not ignored) change, is not in the middle of a merge, rebase,
  cherry-pick, revert or bisect, and its index is not locked.  No force, no
  reset --hard, no stash.  A merge or rebase is predicted with merge-tree first
  and never started when it would conflict.
- Every earlier commit stays an ancestor of the branch (fast-forward, merge),
  except with the rebase policy, which only rewrites commits on no other
  branch, remote or tag (the originals stay in the reflog).
"""

import os

from .. import git
from . import QUIET

IN_PROGRESS = (("rebase-merge", "rebase"), ("rebase-apply", "rebase or am"),
               ("MERGE_HEAD", "merge"), ("CHERRY_PICK_HEAD", "cherry-pick"),
               ("REVERT_HEAD", "revert"), ("sequencer", "cherry-pick or revert"),
               ("BISECT_LOG", "bisect"))


def _in_progress(gitdir):
    for name, what in IN_PROGRESS:
        if os.path.lexists(os.path.join(gitdir, name)):
            return what
    return None


def outcome(wt):
    return {"path": wt.path, "branch": wt.branch, "head": wt.head, "old_head": wt.head,
            "ahead": None, "behind": None, "dirty": None, "state": "skipped", "reason": None,
            "files": [], "action": None}


def skip(o, reason):
    o["state"], o["reason"] = "skipped", reason
    return o


def look_and_sync(ctx, wt):
    """Bring one worktree's branch up to date with the base, if that is safe; return
    what was found and done (an outcome dict)."""
    o = outcome(wt)
    if wt.prunable or not os.path.isdir(wt.path):
        return skip(o, "worktree directory is missing")
    try:
        gitdir = git.worktree_git_dir(wt.path)
    except OSError:
        return skip(o, "cannot read the worktree's .git")
    try:
        o["dirty"] = git.dirty(wt.path)
    except git.GitError as e:
        return skip(o, f"git status failed: {e}")
    busy = _in_progress(gitdir)
    if busy:
        return skip(o, f"{busy} in progress")
    if wt.branch is None:
        return skip(o, "detached HEAD")
    if wt.head is None:
        return skip(o, f"no commits yet on {wt.branch}")
    if ctx.error:
        return skip(o, ctx.error)
    if ctx.base_branch is not None and wt.branch == ctx.base_branch:
        o.update(state="synced", ahead=0, behind=0)
        return o
    try:
        o["behind"], o["ahead"] = git.counts(wt.path, ctx.base_commit, wt.head)
    except git.GitError as e:
        return skip(o, f"cannot compare with {ctx.base_name}: {e}")
    if o["behind"] == 0:
        o["state"] = "synced"
        return o
    if o["dirty"]:
        return skip(o, "uncommitted changes")
    if ctx.policy == "report":
        return skip(o, f"policy report: {o['behind']} behind {ctx.base_name}")
    if o["ahead"] == 0:
        return _move(ctx, wt, gitdir, o, ctx.base_commit, "fast-forward",
                     f"fast-forward to {ctx.base_name}")
    if ctx.policy == "ff-only":
        return skip(o, f"ff-only: diverged from {ctx.base_name} ({o['ahead']} ahead, "
                        f"{o['behind']} behind)")
    if ctx.policy == "rebase":
        new = _rebase(ctx, wt, o)
        if new is None:
            return o
        return _move(ctx, wt, gitdir, o, new, "rebase", f"rebased onto {ctx.base_name}")
    try:
        tree, files = git.merge_tree(wt.path, wt.head, ctx.base_commit)
    except git.GitError as e:
        return skip(o, f"cannot merge {ctx.base_name}: {e}")
    if files:
        o.update(state="conflict", files=files)
        return o
    message = (f"Merge {ctx.base_name} into {wt.branch}\n\n"
               f"Made by orch-sync to keep {wt.branch} current with {ctx.base_name} "
               "(orch.policy merge).\n")
    try:
        commit = git.out(wt.path, "commit-tree", tree, "-p", wt.head, "-p", ctx.base_commit,
                         input=message.encode(), extra_env=ctx.identity)
    except git.GitError as e:
        return skip(o, f"cannot make the merge commit: {e}")
    return _move(ctx, wt, gitdir, o, commit, "merge", f"merged {ctx.base_name}")


def _rebase(ctx, wt, o):
    """The rebased head of WT's branch onto the base, built without touching the
    worktree; None (with O filled in) when it is not done."""
    cwd, base, head = wt.path, ctx.base_commit, wt.head
    try:
        lines = git.out(cwd, "rev-list", "--parents", "--reverse", head, "--not", base).split("\n")
        own = git.out(cwd, "rev-list", head, "--not", base, f"--exclude={wt.branch}",
                      "--branches", "--remotes", "--tags").split("\n")
    except git.GitError as e:
        skip(o, f"cannot list the commits to rebase: {e}")
        return None
    commits = []
    for line in filter(None, lines):
        parts = line.split()
        if len(parts) != 2:
            skip(o, "rebase: the branch has merge commits; not rebased")
            return None
        commits.append(parts[0])
    if len([c for c in own if c]) != len(commits):
        skip(o, "rebase: commits already on another branch, remote or tag; not rebased")
        return None
    prev = base
    try:
        for i, commit in enumerate(commits):
            if i == 0:
                ours = base
            else:
                # A stand-in whose parents make git pick the previous original commit as
                # the merge base: merging it with COMMIT is then exactly a cherry-pick.
                ours = git.out(cwd, "commit-tree", f"{prev}^{{tree}}", "-p", prev, "-p",
                               commits[i - 1], input=b"orch-sync rebase step\n",
                               extra_env=ctx.identity)
            tree, files = git.merge_tree(cwd, ours, commit)
            if files:
                o.update(state="conflict", files=files,
                         reason=f"rebasing {commit[:7]} onto {ctx.base_name} would conflict")
                return None
            prev_tree = git.out(cwd, "rev-parse", f"{prev}^{{tree}}")
            own_trees = git.out(cwd, "rev-parse", f"{commit}^{{tree}}", f"{commit}^^{{tree}}")
            was_empty = own_trees.split("\n")[0] == own_trees.split("\n")[-1]
            if tree == prev_tree and not was_empty:
                continue  # already in the base: dropped, as git rebase does
            raw = git.run(cwd, "cat-file", "commit", commit).stdout
            header, _, message = raw.partition(b"\n\n")
            env = dict(ctx.identity, **_author_env(header))
            prev = git.out(cwd, "commit-tree", tree, "-p", prev, input=message, extra_env=env)
    except git.GitError as e:
        skip(o, f"rebase failed: {e}")
        return None
    return prev


def _author_env(header):
    import re
    for line in header.decode("utf-8", "surrogateescape").split("\n"):
        m = re.fullmatch(r"author (.*) <(.*)> (\d+) ([+-]\d{4})", line)
        if m:
            return {"GIT_AUTHOR_NAME": m.group(1), "GIT_AUTHOR_EMAIL": m.group(2),
                    "GIT_AUTHOR_DATE": f"{m.group(3)} {m.group(4)}"}
    return {}


def _move(ctx, wt, gitdir, o, new, action, detail):
    """Move WT's branch from its head to NEW and update its files, holding its index lock."""
    old = wt.head
    index = os.path.join(gitdir, "index")
    lock = index + ".lock"
    try:
        fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    except FileExistsError:
        return skip(o, "a git command is running in it (index.lock exists)")
    except OSError as e:
        return skip(o, f"cannot lock its index: {e.strerror}")
    done = False
    try:
        try:
            with open(index, "rb") as src:
                data = src.read()
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        try:
            with open(os.path.join(gitdir, "HEAD"), encoding="utf-8") as f:
                head_ref = f.read().strip()
        except OSError:
            head_ref = None
        if head_ref != f"ref: refs/heads/{wt.branch}":
            return skip(o, "HEAD changed while syncing; will retry")
        in_the_way = _ignored_in_the_way(wt.path, old, new)
        if in_the_way:
            return skip(o, f"the update would overwrite the ignored file {in_the_way}")
        env = dict(QUIET, GIT_INDEX_FILE=lock)
        refresh = git.run(wt.path, "update-index", "-q", "--refresh", ok=(0, 1), extra_env=env)
        if refresh.returncode != 0:
            return skip(o, "uncommitted changes")
        try:
            git.run(wt.path, "update-ref", "-m", f"orch-sync: {detail}", "HEAD", new, old,
                    extra_env=QUIET)
        except git.GitError:
            return skip(o, "the branch moved while syncing; will retry")
        try:
            git.run(wt.path, "read-tree", "-m", "-u", old, new, extra_env=env)
        except git.GitError as e:
            try:
                git.run(wt.path, "update-ref", "-m", "orch-sync: undo (worktree changed)",
                        "HEAD", old, new, extra_env=QUIET)
            except git.GitError as undo:
                # Only plumbing run while we hold the index lock can get here; say so loudly.
                return skip(o, f"the worktree changed while syncing ({e}) and the branch "
                                f"could not be set back to {old[:12]} ({undo}); check it")
            return skip(o, f"the worktree changed while syncing ({e}); will retry")
        os.replace(lock, index)
        done = True
    except OSError as e:
        return skip(o, f"cannot update its index: {e.strerror}")
    finally:
        if not done:
            try:
                os.unlink(lock)
            except OSError:
                pass
    o.update(state="updated", head=new, action=action, reason=detail)
    try:
        o["behind"], o["ahead"] = git.counts(wt.path, ctx.base_commit, new)
    except git.GitError:
        pass
    return o


def _ignored_in_the_way(path, old, new):
    """A path the move from OLD to NEW would write over that git does not track here.

    git treats ignored files as expendable (read-tree -u, like merge and checkout,
    overwrites them); an agent's ignored files (local settings, secrets) are not.
    The worktree is clean, so anything on disk where NEW adds a path is ignored.
    """
    data = git.run(path, "diff-tree", "-r", "-z", "--no-renames", "--name-status", old,
                   new).stdout.decode("utf-8", "surrogateescape").split("\0")
    changes = list(zip(data[0::2], data[1::2], strict=False))
    removed = {name for status, name in changes if status == "D"}
    for status, name in changes:
        if status != "A":
            continue
        if os.path.lexists(os.path.join(path, name)):
            return name
        parent = os.path.dirname(name)
        while parent:
            full = os.path.join(path, parent)
            if (os.path.islink(full) or os.path.lexists(full) and not os.path.isdir(full)) \
                    and parent not in removed:
                return parent
            parent = os.path.dirname(parent)
    return None
