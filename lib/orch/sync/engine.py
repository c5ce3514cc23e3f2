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
- A move, in this order: a journal entry (journal.py) with a lock file made
  provably ours, linked to index.lock (from here no git command of the
  agent's can commit or change the index); under it, the checks of what may
  have changed since the look (HEAD, the branch, the index's stat, an edited
  file, an ignored file in the way); read-tree -m -u into a scratch index (the files
  change); update-ref HEAD NEW OLD (compare-and-swap); the scratch index
  replaces the index; the lock goes, then the entry.  A failure after the
  files changed puts them back (_settle).
- A crash at any step leaves the entry; the next pass (or status) settles it
  under the repository's lock: finished when the branch already moved, else
  undone, rewriting only files that are one commit's version, missing, or a
  prefix of one (git was writing them).  A lock that is not provably ours is
  never touched.
"""

import os
import stat
import time

from .. import git, locks
from . import QUIET, journal, test_point

LOCKED = "index.lock held"
SCRATCH = "index.orch-sync"  # the index a move builds, beside the worktree's own
MAX_WORKERS = 8  # worktrees looked at and moved in parallel within one pass
CHILD_WAIT_S = 10.0  # how long recovery lets a dead pass's git child finish before ending it

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


def sync_worktrees(ctx, trees):
    """Bring every worktree in TREES up to date with the base where that is safe;
    return what was found and done, one outcome dict each.  Each worktree is
    looked at, planned and moved in parallel (MAX_WORKERS at a time); the
    merge predictions and the file lists of the moves are one git process each
    for all of them."""
    looks = _each(lambda wt: _look(ctx, wt), trees, lambda wt: (outcome(wt), None))
    merging = [(p["wt"].head, ctx.base_commit) for _, p in looks if p and p["action"] == "merge"]
    merges = git.merge_trees(ctx.cwd, merging, trees=True)
    planned = _each(lambda look: _plan(ctx, look, merges), looks, lambda look: (look[0], None))
    moving = [(p["wt"].head, p["new"]) for _, p in planned if p]
    changes = git.diff_trees(ctx.cwd, moving)
    return _each(lambda item: _finish(ctx, item, changes), planned, lambda item: item[0])


def _each(fn, items, fallback):
    """FN over ITEMS in parallel; an exception (a bug) makes that item's result
    FALLBACK(item) with the error as its reason, and changes nothing more."""
    def work(item):
        try:
            return fn(item)
        except Exception as e:  # noqa: BLE001 - reported in that worktree's row
            result = fallback(item)
            o = result[0] if isinstance(result, tuple) else result
            skip(o, f"internal error: {type(e).__name__}: {e}")
            return (o, None) if isinstance(result, tuple) else o

    if len(items) <= 1:
        return [work(item) for item in items]
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(MAX_WORKERS) as pool:
        return list(pool.map(work, items))


def _look(ctx, wt):
    """What one worktree is and what it needs: (outcome, plan); plan is None when
    nothing is to be done, else says how to move it."""
    o = outcome(wt)
    if wt.prunable or not os.path.isdir(wt.path):
        return skip(o, "worktree directory is missing"), None
    try:
        gitdir = git.worktree_git_dir(wt.path)
    except OSError:
        return skip(o, "cannot read the worktree's .git"), None
    if journal.left(ctx.repo, gitdir):  # recovery could not settle it: the lock is not ours
        return skip(o, LOCKED if os.path.lexists(_index_files(gitdir)[1]) else
                    "an interrupted sync is not finished; will retry"), None
    seen = _index_stat(gitdir)  # before the look: a move needs the index exactly as seen
    try:
        o["dirty"] = git.dirty(wt.path)
    except git.GitError as e:
        return skip(o, f"git status failed: {e}"), None
    busy = _in_progress(gitdir)
    if busy:
        return skip(o, f"{busy} in progress"), None
    if wt.branch is None:
        return skip(o, "detached HEAD"), None
    if wt.head is None:
        return skip(o, f"no commits yet on {wt.branch}"), None
    if ctx.error:
        return skip(o, ctx.error), None
    if ctx.base_branch is not None and wt.branch == ctx.base_branch:
        o.update(state="synced", ahead=0, behind=0)
        return o, None
    try:
        o["behind"], o["ahead"] = git.counts(wt.path, ctx.base_commit, wt.head)
    except git.GitError as e:
        return skip(o, f"cannot compare with {ctx.base_name}: {e}"), None
    if o["behind"] == 0:
        o["state"] = "synced"
        return o, None
    if o["dirty"]:
        return skip(o, "uncommitted changes"), None
    if ctx.policy == "report":
        return skip(o, f"policy report: {o['behind']} behind {ctx.base_name}"), None
    plan = {"wt": wt, "gitdir": gitdir, "seen": seen}
    if o["ahead"] == 0:
        return o, dict(plan, action="fast-forward", new=ctx.base_commit,
                       detail=f"fast-forward to {ctx.base_name}")
    if ctx.policy == "ff-only":
        return skip(o, f"ff-only: diverged from {ctx.base_name} ({o['ahead']} ahead, "
                       f"{o['behind']} behind)"), None
    if ctx.policy == "rebase":
        return o, dict(plan, action="rebase", detail=f"rebased onto {ctx.base_name}")
    return o, dict(plan, action="merge", detail=f"merged {ctx.base_name}")


def _plan(ctx, look, merges):
    """The commit a planned move goes to: made here for a merge or a rebase."""
    o, plan = look
    if plan is None or plan["action"] == "fast-forward":
        return look
    wt = plan["wt"]
    if plan["action"] == "rebase":
        new = _rebase(ctx, wt, o)
        return (o, dict(plan, new=new)) if new else (o, None)
    found = merges.get((wt.head, ctx.base_commit))
    if isinstance(found, git.GitError) or found is None:
        return skip(o, f"cannot merge {ctx.base_name}: {found or 'no answer from git'}"), None
    tree, files = found
    if files:
        o.update(state="conflict", files=files)
        return o, None
    message = (f"Merge {ctx.base_name} into {wt.branch}\n\n"
               f"Made by orch-sync to keep {wt.branch} current with {ctx.base_name} "
               "(orch.policy merge).\n")
    try:
        commit = git.out(wt.path, "commit-tree", tree, "-p", wt.head, "-p", ctx.base_commit,
                         input=message.encode(), extra_env=ctx.identity)
    except git.GitError as e:
        return skip(o, f"cannot make the merge commit: {e}"), None
    return o, dict(plan, new=commit)


def _finish(ctx, item, changes):
    o, plan = item
    if plan is None:
        return o
    wt = plan["wt"]
    found = changes.get((wt.head, plan["new"]))
    if isinstance(found, git.GitError) or found is None:
        return skip(o, f"cannot list the files of the update: {found or 'no answer from git'}")
    return _move(ctx, wt, plan["gitdir"], plan["seen"], o, plan["new"], plan["action"],
                 plan["detail"], found)


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


def _move(ctx, wt, gitdir, seen, o, new, action, detail, changes):
    """Move WT's branch from its head to NEW and update its files (see the rules)."""
    entry = journal.begin(ctx.repo, wt.path, gitdir, wt.branch, wt.head, new, action)
    if entry is None:
        return skip(o, f"an interrupted sync is not finished ({LOCKED})")
    try:
        reason = _move_locked(entry, seen, detail, changes)
    except OSError as e:
        reason = f"cannot update its index: {e.strerror}"
        _settle(entry)
    except BaseException:
        _settle(entry)  # whatever happened, the worktree is left consistent
        raise
    if reason:
        return skip(o, reason)
    o.update(state="updated", head=new, action=action, reason=detail)
    if action == "rebase":
        try:
            o["behind"], o["ahead"] = git.counts(wt.path, ctx.base_commit, new)
        except git.GitError:
            pass
    else:  # what the move made of the counts, without asking git again
        o["behind"], o["ahead"] = 0, (0 if action == "fast-forward" else o["ahead"] + 1)
    return o


def _move_locked(entry, seen, detail, changes):
    """The steps of a move, each guarded; returns None when done, else why not (the
    worktree left as it was)."""
    gitdir, path, old, new = entry.gitdir, entry.path, entry.old, entry.new
    index, lock, scratch = _index_files(gitdir)
    test_point("begin")
    reason = _take_lock(entry)
    if reason:
        entry.remove()
        return reason
    test_point("locked")
    # Under the lock no git command of the agent's can commit or change the
    # index; what changed between the look and the lock is caught here.
    env = dict(QUIET, GIT_INDEX_FILE=scratch)
    # The branch is read again: a commit between the pass's worktree list and the
    # look leaves an index the look saw as it is now, and moving from the listed
    # head would stage the reverse of that commit.  (A branch moved by other means
    # later is caught by update-ref's compare-and-swap.)
    if _head_ref(gitdir) != f"ref: refs/heads/{entry.branch}":
        reason = "HEAD changed while syncing; will retry"
    elif git.rev(path, f"refs/heads/{entry.branch}") != old:
        reason = "the branch moved while syncing; will retry"
    elif _index_stat(gitdir) != seen:
        reason = "the index changed while syncing (a commit or git add); will retry"
    else:
        in_the_way = _ignored_in_the_way(path, changes)
        if in_the_way:
            reason = f"the update would overwrite the ignored file {in_the_way}"
    if reason is None:
        _copy(index, scratch)
        entry.record["stage"] = "writing"  # from here on files may change (saved with the child)
        test_point("refresh")
        # (Not -q: with it, update-index says nothing and exits 0 for an edited file.)
        if _git(entry, path, "update-index", "--refresh", ok=(0, 1),
                extra_env=env).returncode != 0:
            reason = "uncommitted changes"  # a file edited since the look
    if reason:
        _release(entry)
        return reason
    test_point("read-tree")
    try:
        # Writes the files and the scratch index; refuses to overwrite a local change.
        _git(entry, path, "read-tree", "-m", "-u", old, new, extra_env=env)
    except git.GitError as e:
        _settle(entry)  # it may have written some files before failing (a full disk)
        return f"the worktree changed while syncing ({e}); will retry"
    test_point("update-ref")
    try:
        _git(entry, path, "update-ref", "-m", f"orch-sync: {detail}", "HEAD", new, old,
             extra_env=QUIET)
    except git.GitError:
        _settle(entry)  # someone else moved the branch: the files go back
        return "the branch moved while syncing; will retry"
    test_point("rename")
    os.replace(scratch, index)
    test_point("unlock")
    os.unlink(lock)
    entry.remove()
    return None


# --- locks, children and test points ------------------------------------------------------

def _index_files(gitdir):
    """The worktree's index, its lock, and the scratch index a move builds (ours by name)."""
    index = os.path.join(gitdir, "index")
    return index, index + ".lock", os.path.join(gitdir, SCRATCH)


def _index_stat(gitdir):
    try:
        st = os.stat(os.path.join(gitdir, "index"))
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _head_ref(gitdir):
    try:
        with open(os.path.join(gitdir, "HEAD"), encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return None


def _take_lock(entry):
    """Take the worktree's index.lock as git does (it exists or it does not), so that
    it is provably ours: the file is made under another name, its inode written
    down (fsynced), and only then linked to index.lock."""
    _, lock, _ = _index_files(entry.gitdir)
    tmp = lock + ".orch-sync"
    _remove(tmp)  # ours by name, left by a move that died before linking it
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        try:
            entry.own(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, lock)
        except FileExistsError:
            return LOCKED
        finally:
            _remove(tmp)
    except OSError as e:
        return f"cannot lock its index: {e.strerror}"
    return None


def _release(entry):
    """Give the lock back and forget the move: nothing was touched."""
    _, lock, scratch = _index_files(entry.gitdir)
    _remove(scratch)
    if entry.owns(lock):
        _remove(lock)
    entry.remove()


def _git(entry, cwd, *args, **kw):
    """A git command that may hold a lock: listed in the journal while it runs."""
    # (The list only grows: a dead child in it is harmless, recovery checks each
    # pid with its start time, and one write per child is enough.)
    def started(pid):
        test_point(f"{args[0]}-started")  # running, not yet written down
        entry.child(pid)
        test_point(f"{args[0]}-running")
    # The marker finds the child even if the pass dies between starting it and
    # writing its pid down (and finds what it starts: git's hooks).
    kw["extra_env"] = dict(kw.get("extra_env") or {}, ORCH_SYNC_MOVE=entry.marker)
    return git.run(cwd, *args, started=started, **kw)


def _copy(src, dst):
    """DST becomes a copy of SRC (a missing SRC, an index never written, gives an empty file)."""
    try:
        with open(src, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        data = b""
    _remove(dst)
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def _remove(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# --- recovery ------------------------------------------------------------------------------

def recover(repo):
    """Finish or undo every move a pass left unfinished in REPO (call under the
    repository's lock); return one line per worktree dealt with, for the log."""
    done = []
    for entry in journal.left(repo):
        if entry.creator_alive() and not entry.mine():
            continue  # cannot happen under the lock; never touch a live mover's work
        what = _settle(entry)
        if what:
            done.append(f"{entry.path}: {what}")
    return done


def _settle(entry):
    """Leave the worktree of an unfinished move consistent: finished when its branch
    already moved to the new commit (and every file it must write is the old
    version, the new one, or one git was writing), else undone.  Returns what
    was done, or why nothing could be (LOCKED: the entry stays for later)."""
    gitdir, path, old, new = entry.gitdir, entry.path, entry.old, entry.new
    index, lock, scratch = _index_files(gitdir)
    _end_children(entry)
    _remove(scratch + ".lock")  # the lock git's child held on our scratch index
    _remove(scratch)
    test_point("settle")
    if not os.path.isdir(gitdir) or not os.path.isdir(path):
        entry.remove()
        return "the worktree is gone"
    try:
        cur = git.rev(path, f"refs/heads/{entry.branch}")
        if os.path.lexists(lock) and not entry.owns(lock):
            return LOCKED
        if not os.path.lexists(lock):
            if entry.stage != "writing":
                entry.remove()  # it never wrote a file, or it finished
                return None
            # It wrote files, and someone removed its lock since: act only on an
            # index nobody changed (still the old commit's).
            if cur not in (old, new) or not _index_matches(path, old):
                entry.remove()
                return None if cur == new and _index_matches(path, new) else \
                    "an interrupted update's lock was removed by someone else; check it"
            reason = _take_lock(entry)
            if reason:
                return reason
        on_branch = _head_ref(gitdir) == f"ref: refs/heads/{entry.branch}"
        if on_branch and cur == new and _converge(entry, new, finish=True):
            what = "finished an interrupted update"
        else:
            if on_branch and cur == new:
                # Files it did not write are in the way of finishing: undo it.
                _git(entry, path, "update-ref", "-m", "orch-sync: undo an interrupted update",
                     "HEAD", old, new, extra_env=QUIET)
            _converge(entry, old)
            what = "undid an interrupted update"
        test_point("settled")
        _remove(lock)
        entry.remove()
        return what
    except (git.GitError, OSError) as e:
        return f"could not settle an interrupted update ({e}); will retry"


def _end_children(entry):
    """Wait (bounded) for the git children a dead pass left running, then end them."""
    import signal

    def running(children):
        return [(pid, start) for pid, start in children if locks.alive(pid, start)]

    children = running(entry.children)
    if not entry.mine():  # a dead pass: its last child may have started unrecorded
        children += [c for c in _marked(entry.marker) if c not in children]
    deadline = time.monotonic() + CHILD_WAIT_S
    while children and time.monotonic() < deadline:
        time.sleep(0.02)
        children = running(children)
    for pid, _start in children:
        try:
            os.kill(pid, signal.SIGKILL)  # its pid and start time say it is our child
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 2
    while running(children) and time.monotonic() < deadline:
        time.sleep(0.02)


def _marked(marker):
    """(pid, start time) of every process of ours carrying ORCH_SYNC_MOVE=MARKER."""
    want = f"ORCH_SYNC_MOVE={marker}".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                env = f.read()
        except OSError:
            continue  # gone, or another user's
        if want in env.split(b"\0"):
            found.append((int(name), locks.process_start(int(name))))
    return found


def _index_matches(path, commit):
    proc = git.run(path, "diff-index", "--cached", "--quiet", commit, "--", ok=(0, 1))
    return proc.returncode == 0


def _converge(entry, target, finish=False):
    """Make the index and the files of every path the move changes match TARGET (its
    old or new commit), holding the worktree's lock.  A file is rewritten only
    when it is the other commit's version, missing, or a prefix of either (git
    was writing it); any other content is someone's edit: with FINISH nothing
    is done and False returned, else the file is left as it is, showing as a
    change.  The index is built beside the real one and put in its place."""
    path = entry.path
    index, _, scratch = _index_files(entry.gitdir)
    changes = _changes(path, entry.old, entry.new)
    side = "new" if target == entry.new else "old"
    found = {c["path"]: _version(path, c) for c in changes}
    if finish and None in found.values():
        return False
    _copy(index, scratch)
    env = dict(QUIET, GIT_INDEX_FILE=scratch)
    zero = "0" * len(entry.old)
    info = "".join(f"{c[side][0]} {c[side][1]}\t{c['path']}\0" if c[side] else
                   f"0 {zero}\t{c['path']}\0" for c in changes)
    if info:
        _git(entry, path, "update-index", "-z", "--index-info",
             input=info.encode("utf-8", "surrogateescape"), extra_env=env)
    rewrite = [c for c in changes if found[c["path"]] not in (side, None)]
    for c in rewrite:
        if c[side] is None:
            _remove_file(path, c["path"])
    write = [c["path"] for c in rewrite if c[side] is not None]
    if write:
        _git(entry, path, "checkout-index", "-f", "-q", "-z", "--stdin",
             input="".join(f"{p}\0" for p in write).encode("utf-8", "surrogateescape"),
             extra_env=env)
    _git(entry, path, "update-index", "-q", "--refresh", ok=(0, 1), extra_env=env)
    test_point("converged")
    os.replace(scratch, index)
    return True


def _changes(path, old, new):
    """The paths the move from OLD to NEW changes: dicts with path, old and new, each
    (mode, blob) or None where that commit has no such path."""
    data = git.run(path, "diff-tree", "-r", "-z", "--no-renames", old, new).stdout
    fields = data.decode("utf-8", "surrogateescape").split("\0")
    found = []
    for head, name in zip(fields[0::2], fields[1::2], strict=False):
        if not head.startswith(":"):
            continue
        mode_a, mode_b, blob_a, blob_b, _ = head[1:].split(" ")
        found.append({"path": name,
                      "old": None if mode_a == "000000" else (mode_a, blob_a),
                      "new": None if mode_b == "000000" else (mode_b, blob_b)})
    return found


def _version(path, change):
    """Which version of CHANGE's path the worktree holds: "old", "new", "torn"
    (missing, or a prefix of either: git was writing it), or None (other content)."""
    full = os.path.join(path, change["path"])
    try:
        st = os.lstat(full)
    except FileNotFoundError:
        return "torn"
    if stat.S_ISLNK(st.st_mode):
        data, mode = os.fsencode(os.readlink(full)), "120000"
        blob = git.out(path, "hash-object", "--stdin", "--no-filters", input=data)
    elif stat.S_ISREG(st.st_mode):
        with open(full, "rb") as f:
            data = f.read()
        mode = "100755" if st.st_mode & 0o100 else "100644"
        blob = git.out(path, "hash-object", "--stdin", f"--path={change['path']}", input=data)
    else:
        return None
    for side in ("old", "new"):
        if change[side] == (mode, blob):
            return side
    for side in ("old", "new"):
        if change[side] is not None:
            content = git.run(path, "cat-file", "blob", change[side][1]).stdout
            if len(data) < len(content) and content.startswith(data):
                return "torn"
    return None


def _remove_file(path, name):
    """Remove NAME from the worktree at PATH, and the directories it leaves empty."""
    _remove(os.path.join(path, name))
    parent = os.path.dirname(name)
    while parent:
        try:
            os.rmdir(os.path.join(path, parent))
        except OSError:
            break
        parent = os.path.dirname(parent)


def _ignored_in_the_way(path, changes):
    """A path the move (CHANGES: (status, path) pairs) would write over that git does
    not track here.

    git treats ignored files as expendable (read-tree -u, like merge and checkout,
    overwrites them); an agent's ignored files (local settings, secrets) are not.
    The worktree is clean, so anything on disk where the move adds a path is ignored.
    """
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
