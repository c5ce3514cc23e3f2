"""The sync engine: hooks, events, passes, policies, merge-tree predictions.

Rules:
- Hooks go into the repository's common hooks directory (or core.hooksPath),
  which every worktree shares.  A hook that was there is renamed NAME.orch-chained
  and run by ours with the same arguments and input, its exit status passed on;
  uninstall renames it back, so the directory ends byte for byte as it was.
  Our hooks are recognised by their second line (MARKER).  Install and
  uninstall are all or nothing: the database row is written first, in a write
  transaction held while the files change; each file change records how to
  undo it, and a failure (of a file change or of the commit) undoes them all.
- Events: a hook appends one line to <state>/sync/<key>.events, a file only
  orch-sync creates (0600), and only when it is a regular file, not a symlink;
  orch-sync opens it O_NOFOLLOW.  A consumer holding the repository's lock reads
  the file and truncates it, then passes; a pass that fails appends the lines
  back, so a later run retries.  A line that lands between the read and
  the truncation is lost as text but not as a trigger: the hook ran after its
  ref update, so the pass that follows the truncation sees the update.  Events
  arriving during a pass leave the file non-empty: one more pass, however many.
- orch.remote and orch.base reach git as arguments: a remote must be a
  configured remote's name, neither may start with '-', and both are passed
  after --end-of-options.
- One pass per repository at a time (lock sync.<key>); repositories in parallel.
- A worktree is changed only if it is on a branch, has no staged, unstaged or
  untracked (not ignored) change, is not in the middle of a merge, rebase,
  cherry-pick, revert or bisect, and its index is not locked.  No force, no
  reset --hard, no stash.  A merge or rebase is predicted with merge-tree first
  and never started when it would conflict.
- Moving a branch takes the worktree's index.lock, as git does, for the whole
  move, so no git command of the agent's can run half-way through it: the
  branch moves by compare-and-swap (update-ref NEW OLD), then `read-tree -m -u
  OLD NEW` writes the files into the locked index (it refuses to overwrite any
  local change or untracked file, ignored ones included); if that fails, the
  branch is swapped back and the worktree was never touched.  Every earlier
  commit stays an ancestor of the branch (fast-forward, merge), except with the
  rebase policy, which only rewrites commits on no other branch, remote or tag
  (the originals stay in the reflog).
- Our own git commands run with ORCH_SYNC_QUIET=1, which our hooks honour, so
  a pass never triggers itself.
- Conflicts are kept per pair of branches (open or resolved); an agent mapped
  to a tmux target is told (tasks.add) when a conflict names a file it has not
  been told about, once per side.
"""

import _thread
import os
import stat
import time

from . import cli, clock, git, locks, paths, store
from .errors import CANTCREAT, DATAERR, UNAVAILABLE, OrchError

HOOKS = ("reference-transaction", "post-checkout")
CHAINED = ".orch-chained"
MARKER = "# orch-sync hook:"
CREATED = "# orch-sync: this hooks directory was created by orch-sync install"
POLICIES = ("merge", "ff-only", "rebase", "report")
FALLBACK_NAME, FALLBACK_EMAIL = "orch-sync", "orch-sync@localhost"
QUIET = {"ORCH_SYNC_QUIET": "1"}
DAEMON_LOCK = "orch-sync.daemon"
POLL_S = 0.05          # the daemon's stat of each events file: well inside the 0.2 s promise
RELOAD_S = 1.0         # how often the daemon re-reads which repositories it serves
SAFETY_PASS_S = 300.0  # a full pass this often anyway: a worktree cleaned without a commit
MAX_WORKERS = 8        # worktrees looked at in parallel within one pass
RETRY_S, RETRY_MAX_S = 1.0, 60.0  # the daemon's first and longest wait after a failed pass
UNLIMITED = 1 << 30    # the status table's width: its last column is never cut short
IN_PROGRESS = (("rebase-merge", "rebase"), ("rebase-apply", "rebase or am"),
               ("MERGE_HEAD", "merge"), ("CHERRY_PICK_HEAD", "cherry-pick"),
               ("REVERT_HEAD", "revert"), ("sequencer", "cherry-pick or revert"),
               ("BISECT_LOG", "bisect"))

# (_thread rather than threading, and json, hashlib and threading imported where
# used: every orch-sync verb imports this module, and start-up time matters.)
_status_file_lock = _thread.allocate_lock()


# --- hooks ---------------------------------------------------------------------

def hook_dirs():
    """Where the hook scripts may be, in order: a checkout (lib/orch -> hooks),
    `make install` ($PREFIX/lib/orch/orch -> $PREFIX/share/orch/hooks), and pip's
    data files (<prefix>/share/orch/hooks, for the venv's or the user's prefix)."""
    import site
    import sys
    here = os.path.dirname(os.path.abspath(__file__))
    found = [os.path.join(here, "..", "..", "hooks"),
             os.path.join(here, "..", "..", "..", "share", "orch", "hooks"),
             os.path.join(sys.prefix, "share", "orch", "hooks")]
    user = getattr(site, "USER_BASE", None)
    if user:
        found.append(os.path.join(user, "share", "orch", "hooks"))
    return [os.path.normpath(d) for d in found]


def hook_source(name):
    for directory in hook_dirs():
        try:
            with open(os.path.join(directory, name), encoding="utf-8") as f:
                text = f.read()
        except OSError:
            continue
        if MARKER in text:
            return text
    raise OrchError(f"the {name} hook script is not installed (looked in "
                    f"{', '.join(hook_dirs())})", UNAVAILABLE)


def _sh_quote(text):
    return "'" + text.replace("'", "'\\''") + "'"


def render_hook(source, events, created):
    """Our hook SOURCE with the events file written in (and the created-directory mark)."""
    lines = source.split("\n")
    for i, line in enumerate(lines):
        if line.startswith("events="):
            lines[i] = f"events={_sh_quote(events)}"
            break
    else:
        raise OrchError("a hook script has no events= line", UNAVAILABLE)
    if created:
        lines.insert(2, CREATED)
    return "\n".join(lines)


def is_ours(path):
    """True if PATH is one of our hooks (its second line carries MARKER)."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return False
    lines = head.split(b"\n")
    return len(lines) > 1 and lines[1].startswith(MARKER.encode())


def _write_hook(path, text):
    paths.write_atomic(path, text, mode=0o755, status=CANTCREAT)


def _file_op(what, fn, *paths_):
    """Run FN(*PATHS_), turning a failure into exit 73 naming WHAT was being done."""
    try:
        fn(*paths_)
    except OSError as e:
        raise OrchError(f"cannot {what} {paths_[0]}: {e.strerror}", CANTCREAT) from None


def _undo(steps):
    """Take back file changes, last first; a step that cannot be undone is passed over."""
    for step in reversed(steps):
        try:
            step()
        except (OSError, OrchError):
            pass


def check_hooks_dir(repo):
    """Refuse a hooks directory that is not the repository's own shared one."""
    raw = git.config(repo.common_dir, r"^core\.hookspath$").get("core.hookspath")
    if raw and not raw[-1].startswith(("/", "~")):
        raise OrchError(f"core.hooksPath is relative ({raw[-1]}): each worktree would run "
                        "hooks from its own directory; set it to an absolute path", UNAVAILABLE)
    common = repo.common_dir + os.sep
    inside = not repo.hooks_dir.startswith(common)
    if inside:
        for wt in git.worktrees(repo.common_dir):
            if not wt.bare and (repo.hooks_dir + os.sep).startswith(
                    os.path.realpath(wt.path) + os.sep):
                raise OrchError(f"the hooks directory {repo.hooks_dir} is inside the worktree "
                                f"{wt.path}: installing would leave that worktree with "
                                "uncommitted files", UNAVAILABLE)


def install(conn, repo):
    """Install our hooks for REPO (idempotent); return the hooks directory.

    All or nothing: the repository's row is written first, in a write
    transaction held while the files change; a file change that fails rolls
    the row back and undoes the changes made so far, and so does a commit that
    fails after the files were changed.
    """
    check_hooks_dir(repo)
    hooks = repo.hooks_dir
    texts = {name: hook_source(name) for name in HOOKS}  # all found before anything changes
    for name in HOOKS:
        path = os.path.join(hooks, name)
        if os.path.lexists(path) and not is_ours(path) and os.path.lexists(path + CHAINED):
            raise OrchError(f"{path} is not orch-sync's and {path + CHAINED} exists too; move "
                            "one of them away first", CANTCREAT)
    ctx = _context(repo)
    remote = ctx.cfg.get("orch.remote")
    url = _normal_url(ctx.cfg.get(f"remote.{remote}.url"), ctx.cwd) if remote else None
    undo = []
    try:
        with store.tx(conn):
            _register_rows(conn, repo, hooks=hooks, remote=remote, remote_url=url)
            _install_files(repo, hooks, texts, undo)
    except BaseException:
        _undo(undo)
        raise
    return hooks


def _install_files(repo, hooks, texts, undo):
    """Write our hooks (and the events file), appending to UNDO how to take each step back."""
    events = events_path(repo)
    if not os.path.lexists(events):
        events_path(repo, create=True)
        undo.append(lambda: os.unlink(events))
    else:
        events_path(repo, create=True)  # refuses a symlink planted there
    created = not os.path.isdir(hooks)
    if created:
        _file_op("create", lambda p: os.makedirs(p, 0o755), hooks)
        undo.append(lambda: os.rmdir(hooks))
    for name in HOOKS:
        path = os.path.join(hooks, name)
        saved = path + CHAINED
        mark = created
        ours = is_ours(path)
        if ours:
            with open(path, "rb") as f:
                old = f.read()
            mark = mark or CREATED.encode() in old
            undo.append(lambda path=path, old=old: _write_hook(path, old))
        elif os.path.lexists(path):
            _file_op("move aside", os.rename, path, saved)
            undo.append(lambda path=path, saved=saved: os.rename(saved, path))
        _write_hook(path, render_hook(texts[name], events, mark))
        if not ours:
            undo.append(lambda path=path: os.unlink(path))


def uninstall(conn, repo):
    """Remove our hooks and put back what was there; return warnings (strings).

    All or nothing, as install: the row is updated first, in a write
    transaction held while the hooks change, and the hooks are put back if
    that transaction cannot commit.
    """
    hooks = repo.hooks_dir
    warnings, created, undo = [], False, []
    try:
        with store.tx(conn):
            conn.execute("UPDATE sync_repos SET hooks = NULL, updated = ? WHERE repo = ?",
                         (clock.now(), repo.common_dir))
            for name in HOOKS:
                path = os.path.join(hooks, name)
                saved = path + CHAINED
                if is_ours(path):
                    with open(path, "rb") as f:
                        old = f.read()
                    created = created or CREATED.encode() in old
                    _file_op("remove", os.unlink, path)
                    undo.append(lambda path=path, old=old: _write_hook(path, old))
                    if os.path.lexists(saved):
                        _file_op("restore", os.rename, saved, path)
                        undo.append(lambda path=path, saved=saved: os.rename(path, saved))
                elif os.path.lexists(saved):
                    warnings.append(f"{path} is no longer orch-sync's; left it and {saved} as "
                                    "they are")
    except BaseException:
        _undo(undo)
        raise
    if created:
        try:
            os.rmdir(hooks)
        except OSError:
            pass  # not empty: something else lives there now
    try:
        os.unlink(events_path(repo))
    except OSError:
        pass
    return warnings


# --- repositories and events ------------------------------------------------------

def repo_key(repo):
    import hashlib
    return hashlib.sha1(repo.common_dir.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def lock_name(repo):
    return f"sync.{repo_key(repo)}"


def sync_dir():
    return paths.sub("sync", create_dir=True)


def events_path(repo, create=False):
    path = os.path.join(sync_dir(), f"{repo_key(repo)}.events")
    if create:
        os.close(paths.open_private(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND))
    return path


def pending(repo):
    """True when the repository's events file holds events (one lstat).  Anything
    but a regular file there (a planted symlink) counts too, so that the pass
    reading it refuses it out loud."""
    try:
        st = os.lstat(events_path(repo))
    except OSError:
        return False
    return st.st_size > 0 or not stat.S_ISREG(st.st_mode)


def take_events(repo):
    """Read and empty the events file; return its lines (recreating it if it went missing)."""
    fd = paths.open_private(events_path(repo), os.O_RDWR | os.O_CREAT)
    try:
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
        data = b"".join(chunks)
        if data:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)
    return [line for line in data.decode("utf-8", "replace").split("\n") if line]


def register(conn, repo, hooks=None, **fields):
    """Create or update REPO's row; HOOKS (when given) records an install."""
    with store.tx(conn):
        _register_rows(conn, repo, hooks, **fields)


def _register_rows(conn, repo, hooks=None, **fields):
    conn.execute("INSERT INTO sync_repos (repo, top, bare, updated) VALUES (?, ?, ?, ?) "
                 "ON CONFLICT(repo) DO UPDATE SET top = excluded.top, "
                 "updated = excluded.updated",
                 (repo.common_dir, repo.top, int(repo.bare), clock.now()))
    if hooks is not None:
        conn.execute("UPDATE sync_repos SET hooks = ? WHERE repo = ?", (hooks, repo.common_dir))
    for key, value in fields.items():
        conn.execute(f"UPDATE sync_repos SET {key} = ? WHERE repo = ?",
                     (value, repo.common_dir))


def check_store(conn):
    """Read each table a pass uses once: an unreadable store raises here (the daemon's
    check in the foreground) rather than in a detached daemon that then dies."""
    for table in ("sync_repos", "sync_worktrees", "sync_conflicts", "sync_predictions",
                  "sync_targets"):
        conn.execute(f"SELECT count(*) FROM {table}").fetchone()


def installed(conn):
    """The repositories whose hooks are installed from this state directory."""
    rows = conn.execute("SELECT repo, hooks, bare FROM sync_repos WHERE hooks IS NOT NULL "
                        "ORDER BY repo").fetchall()
    return [git.Repo(r["repo"], r["hooks"], bool(r["bare"])) for r in rows]


def _poke_peers(conn, repo, lines):
    """A remote-tracking branch moved here: give every installed clone of the same
    remote an event too, so each fetches and syncs (separate clones)."""
    if not any("\trefs/remotes/" in line for line in lines):
        return
    row = conn.execute("SELECT remote_url FROM sync_repos WHERE repo = ?",
                       (repo.common_dir,)).fetchone()
    if not row or not row["remote_url"]:
        return
    peers = conn.execute("SELECT repo FROM sync_repos WHERE remote_url = ? AND repo != ? AND "
                         "hooks IS NOT NULL", (row["remote_url"], repo.common_dir)).fetchall()
    for peer in peers:
        path = events_path(git.Repo(peer["repo"], None, False))
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            os.write(fd, f"peer\t-\t{repo.top}\n".encode("utf-8", "surrogateescape"))
        finally:
            os.close(fd)


# --- one pass ----------------------------------------------------------------------

class Context:
    """What a pass knows about its repository: configuration, base, identity."""

    def __init__(self, repo):
        self.repo = repo
        self.cwd = repo.common_dir
        self.error = None
        self.remote = self.remote_url = None
        self.base_name = self.base_branch = self.base_commit = None
        cfg = git.config(self.cwd, r"^(orch|user|author|committer)\.|^remote\..*\.url$")
        self.cfg = {k: v[-1] for k, v in cfg.items()}
        self.policy = self.cfg.get("orch.policy", "merge")
        self.identity = _identity(self.cfg)

    def resolve(self, worktrees):
        """Fetch (with orch.remote) and find the base; a failure is kept in .error."""
        if self.policy not in POLICIES:
            self.error = (f"bad orch.policy {self.policy!r} (want merge, ff-only, rebase "
                          "or report)")
            return
        self.remote = self.cfg.get("orch.remote") or None
        base = self.cfg.get("orch.base") or None
        # Both reach git as arguments: neither may look like an option, and the
        # remote must be one configured here (not a URL or path given in its place).
        if base and base.startswith("-"):
            self.error = f"bad orch.base {base!r} (a branch name cannot start with '-')"
            return
        if self.remote and (self.remote.startswith("-")
                            or f"remote.{self.remote}.url" not in self.cfg):
            self.error = (f"bad orch.remote {self.remote!r} (want the name of a remote "
                          "configured in this repository, see git remote)")
            return
        if self.remote:
            self.remote_url = _normal_url(self.cfg.get(f"remote.{self.remote}.url"), self.cwd)
            try:
                git.run(self.cwd, "fetch", "--quiet", "--no-write-fetch-head",
                        "--end-of-options", self.remote, extra_env=QUIET, timeout=120)
            except git.GitError as e:
                self.error = f"fetch from {self.remote} failed: {e}"
                return
            names = [base] if base else ["main", "master", _remote_head(self.cwd, self.remote)]
            for name in filter(None, names):
                commit = git.rev(self.cwd, f"refs/remotes/{self.remote}/{name}")
                if commit:
                    self.base_name, self.base_commit = f"{self.remote}/{name}", commit
                    return
            self.error = (f"base {self.remote}/{base} not found" if base else
                          f"no base: neither {self.remote}/main nor {self.remote}/master exists")
            return
        main_branch = next((w.branch for w in worktrees if not w.bare), None)
        names = [base] if base else ["main", "master", main_branch]
        for name in filter(None, names):
            commit = git.rev(self.cwd, f"refs/heads/{name}")
            if commit:
                self.base_name = self.base_branch = name
                self.base_commit = commit
                return
        if base:
            commit = git.rev(self.cwd, base)  # any revision, e.g. origin/main
            if commit:
                self.base_name, self.base_commit = base, commit
                return
        self.error = (f"base {base} not found" if base else
                      "no base: no main or master branch and no branch in the main worktree")


def _normal_url(url, cwd):
    if not url:
        return None
    if "://" in url or (":" in url.split("/")[0] and not url.startswith("/")):
        return url
    path = url if os.path.isabs(url) else os.path.join(cwd, url)
    return os.path.realpath(path)


def _remote_head(cwd, remote):
    try:
        ref = git.out(cwd, "symbolic-ref", "-q", "--end-of-options", f"refs/remotes/{remote}/HEAD",
                      ok=(0,))
    except git.GitError:
        return None
    return ref.removeprefix(f"refs/remotes/{remote}/")


def _identity(cfg):
    """Author and committer for commits orch-sync makes: the repository's identity
    (environment, then git config), else orch-sync <orch-sync@localhost>."""
    env = {}
    for role in ("author", "committer"):
        up = role.upper()
        name = os.environ.get(f"GIT_{up}_NAME") or cfg.get(f"{role}.name") or cfg.get("user.name")
        email = (os.environ.get(f"GIT_{up}_EMAIL") or cfg.get(f"{role}.email")
                 or cfg.get("user.email"))
        env[f"GIT_{up}_NAME"] = name or FALLBACK_NAME
        env[f"GIT_{up}_EMAIL"] = email or FALLBACK_EMAIL
    return env


def _in_progress(gitdir):
    for name, what in IN_PROGRESS:
        if os.path.lexists(os.path.join(gitdir, name)):
            return what
    return None


def _outcome(wt):
    return {"path": wt.path, "branch": wt.branch, "head": wt.head, "old_head": wt.head,
            "ahead": None, "behind": None, "dirty": None, "state": "skipped", "reason": None,
            "files": [], "action": None}


def _skip(o, reason):
    o["state"], o["reason"] = "skipped", reason
    return o


def look_and_sync(ctx, wt):
    """Bring one worktree's branch up to date with the base, if that is safe; return
    what was found and done (an outcome dict)."""
    o = _outcome(wt)
    if wt.prunable or not os.path.isdir(wt.path):
        return _skip(o, "worktree directory is missing")
    try:
        gitdir = git.worktree_git_dir(wt.path)
    except OSError:
        return _skip(o, "cannot read the worktree's .git")
    try:
        o["dirty"] = git.dirty(wt.path)
    except git.GitError as e:
        return _skip(o, f"git status failed: {e}")
    busy = _in_progress(gitdir)
    if busy:
        return _skip(o, f"{busy} in progress")
    if wt.branch is None:
        return _skip(o, "detached HEAD")
    if wt.head is None:
        return _skip(o, f"no commits yet on {wt.branch}")
    if ctx.error:
        return _skip(o, ctx.error)
    if ctx.base_branch is not None and wt.branch == ctx.base_branch:
        o.update(state="synced", ahead=0, behind=0)
        return o
    try:
        o["behind"], o["ahead"] = git.counts(wt.path, ctx.base_commit, wt.head)
    except git.GitError as e:
        return _skip(o, f"cannot compare with {ctx.base_name}: {e}")
    if o["behind"] == 0:
        o["state"] = "synced"
        return o
    if o["dirty"]:
        return _skip(o, "uncommitted changes")
    if ctx.policy == "report":
        return _skip(o, f"policy report: {o['behind']} behind {ctx.base_name}")
    if o["ahead"] == 0:
        return _move(ctx, wt, gitdir, o, ctx.base_commit, "fast-forward",
                     f"fast-forward to {ctx.base_name}")
    if ctx.policy == "ff-only":
        return _skip(o, f"ff-only: diverged from {ctx.base_name} ({o['ahead']} ahead, "
                        f"{o['behind']} behind)")
    if ctx.policy == "rebase":
        new = _rebase(ctx, wt, o)
        if new is None:
            return o
        return _move(ctx, wt, gitdir, o, new, "rebase", f"rebased onto {ctx.base_name}")
    try:
        tree, files = git.merge_tree(wt.path, wt.head, ctx.base_commit)
    except git.GitError as e:
        return _skip(o, f"cannot merge {ctx.base_name}: {e}")
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
        return _skip(o, f"cannot make the merge commit: {e}")
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
        _skip(o, f"cannot list the commits to rebase: {e}")
        return None
    commits = []
    for line in filter(None, lines):
        parts = line.split()
        if len(parts) != 2:
            _skip(o, "rebase: the branch has merge commits; not rebased")
            return None
        commits.append(parts[0])
    if len([c for c in own if c]) != len(commits):
        _skip(o, "rebase: commits already on another branch, remote or tag; not rebased")
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
        _skip(o, f"rebase failed: {e}")
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
        return _skip(o, "a git command is running in it (index.lock exists)")
    except OSError as e:
        return _skip(o, f"cannot lock its index: {e.strerror}")
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
            return _skip(o, "HEAD changed while syncing; will retry")
        in_the_way = _ignored_in_the_way(wt.path, old, new)
        if in_the_way:
            return _skip(o, f"the update would overwrite the ignored file {in_the_way}")
        env = dict(QUIET, GIT_INDEX_FILE=lock)
        refresh = git.run(wt.path, "update-index", "-q", "--refresh", ok=(0, 1), extra_env=env)
        if refresh.returncode != 0:
            return _skip(o, "uncommitted changes")
        try:
            git.run(wt.path, "update-ref", "-m", f"orch-sync: {detail}", "HEAD", new, old,
                    extra_env=QUIET)
        except git.GitError:
            return _skip(o, "the branch moved while syncing; will retry")
        try:
            git.run(wt.path, "read-tree", "-m", "-u", old, new, extra_env=env)
        except git.GitError as e:
            try:
                git.run(wt.path, "update-ref", "-m", "orch-sync: undo (worktree changed)",
                        "HEAD", old, new, extra_env=QUIET)
            except git.GitError as undo:
                # Only plumbing run while we hold the index lock can get here; say so loudly.
                return _skip(o, f"the worktree changed while syncing ({e}) and the branch "
                                f"could not be set back to {old[:12]} ({undo}); check it")
            return _skip(o, f"the worktree changed while syncing ({e}); will retry")
        os.replace(lock, index)
        done = True
    except OSError as e:
        return _skip(o, f"cannot update its index: {e.strerror}")
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


def _context(repo):
    try:
        return Context(repo)
    except git.GitError as e:
        raise OrchError(f"{repo.top}: cannot read its configuration: {e}", UNAVAILABLE) from None


def _worktrees(ctx):
    try:
        trees = [w for w in git.worktrees(ctx.cwd) if not w.bare]
    except git.GitError as e:
        raise OrchError(f"{ctx.repo.top}: cannot list worktrees: {e}", UNAVAILABLE) from None
    for w in trees:
        w.path = os.path.realpath(w.path)  # the map and the records use real paths
    return trees


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


def sync_pass(conn, repo, lines=()):
    """One pass over every worktree of REPO: sync, predict, record, tell.  Returns
    (outcomes, pairs)."""
    ctx = _context(repo)
    trees = _worktrees(ctx)
    ctx.resolve(trees)
    outcomes = _parallel(lambda wt: look_and_sync(ctx, wt), trees)
    pairs = matrix(conn, ctx, outcomes) if ctx.base_commit else []
    now = clock.now()
    record(conn, ctx, outcomes, pairs, now, lines)
    notify(conn, ctx, outcomes)
    write_status_file(conn)
    return outcomes, pairs


def _parallel(fn, items):
    def work(item):
        try:
            return fn(item)
        except Exception as e:  # noqa: BLE001 - a bug: report it there, change nothing more
            return _skip(_outcome(item), f"internal error: {type(e).__name__}: {e}")

    if len(items) <= 1:
        return [work(item) for item in items]
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(MAX_WORKERS) as pool:
        return list(pool.map(work, items))


# --- predictions -----------------------------------------------------------------------

def nodes(ctx, outcomes):
    """The branches a matrix covers: each worktree's branch (not the base), then the base."""
    found = []
    for o in outcomes:
        if o["branch"] and o["head"] and o["branch"] != ctx.base_branch:
            found.append({"name": o["branch"], "head": o["head"], "worktree": o["path"]})
    found.append({"name": ctx.base_name, "head": ctx.base_commit, "worktree": None})
    return found


def matrix(conn, ctx, outcomes, cached=True):
    """Every pair of agent branches and each branch against the base, predicted.

    Returns dicts {a, b, a_head, b_head, clean, files, error}.
    """
    import json
    found = nodes(ctx, outcomes)
    agents, base = found[:-1], found[-1]
    wanted = [(x, y) for i, x in enumerate(agents) for y in agents[i + 1:]]
    wanted += [(x, base) for x in agents]
    commits = {tuple(sorted((x["head"], y["head"]))) for x, y in wanted}
    known = {}
    if cached:
        for a, b in commits:
            row = conn.execute("SELECT files FROM sync_predictions WHERE a = ? AND b = ?",
                               (a, b)).fetchone()
            if row is not None:
                known[(a, b)] = json.loads(row["files"])
    todo = [pair for pair in commits if pair not in known and pair[0] != pair[1]]
    fresh = git.merge_trees(ctx.cwd, todo)
    now = clock.now()
    with store.tx(conn):
        for pair, files in fresh.items():
            if not isinstance(files, git.GitError):
                conn.execute("INSERT OR REPLACE INTO sync_predictions (a, b, files, at) "
                             "VALUES (?, ?, ?, ?)", (*pair, json.dumps(files), now))
        conn.execute("DELETE FROM sync_predictions WHERE at < ?", (now - 86400,))
    known.update(fresh)
    pairs = []
    for x, y in wanted:
        key = tuple(sorted((x["head"], y["head"])))
        files = [] if key[0] == key[1] else known.get(key, [])
        error = str(files) if isinstance(files, git.GitError) else None
        files = [] if error else files
        a, b = (x, y) if y is base or x["name"] <= y["name"] else (y, x)
        pairs.append({"a": a["name"], "b": b["name"], "a_head": a["head"], "b_head": b["head"],
                      "a_worktree": a["worktree"], "b_worktree": b["worktree"],
                      "base": b is base, "clean": not files and not error, "files": files,
                      "error": error})
    return pairs


def conflicts_now(conn, repo):
    """Compute the conflict matrix afresh (no sync); record it; return (ctx, pairs)."""
    ctx = _context(repo)
    trees = _worktrees(ctx)
    ctx.resolve(trees)
    if ctx.error:
        raise OrchError(f"{repo.top}: {ctx.error}", UNAVAILABLE)
    outcomes = [_outcome(w) for w in trees if w.branch and w.head]
    pairs = matrix(conn, ctx, outcomes, cached=False)
    register(conn, repo)
    with store.tx(conn):
        _record_conflicts(conn, ctx, pairs, clock.now())
    return ctx, pairs


# --- recording -------------------------------------------------------------------------

def record(conn, ctx, outcomes, pairs, now, lines=()):
    import json
    repo = ctx.repo
    register(conn, repo)
    with store.tx(conn):
        conn.execute("UPDATE sync_repos SET base = ?, policy = ?, remote = ?, remote_url = ?, "
                     "last_pass = ?, error = ? WHERE repo = ?",
                     (ctx.base_name, ctx.policy, ctx.remote, ctx.remote_url, now, ctx.error,
                      repo.common_dir))
        if lines:
            conn.execute("UPDATE sync_repos SET last_event = ? WHERE repo = ?",
                         (now, repo.common_dir))
        seen = []
        for o in outcomes:
            seen.append(o["path"])
            current = o["state"] in ("synced", "updated")
            conn.execute(
                "INSERT INTO sync_worktrees (repo, path, branch, head, base, ahead, behind, "
                "dirty, state, reason, files, action, checked, last_sync) VALUES "
                "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(repo, path) DO UPDATE SET "
                "branch = excluded.branch, head = excluded.head, base = excluded.base, "
                "ahead = excluded.ahead, behind = excluded.behind, dirty = excluded.dirty, "
                "state = excluded.state, reason = excluded.reason, files = excluded.files, "
                "action = excluded.action, checked = excluded.checked, "
                "last_sync = COALESCE(excluded.last_sync, sync_worktrees.last_sync)",
                (repo.common_dir, o["path"], o["branch"], o["head"], ctx.base_name, o["ahead"],
                 o["behind"], None if o["dirty"] is None else int(o["dirty"]), o["state"],
                 o["reason"], json.dumps(o["files"]), o["action"], now,
                 now if current else None))
        marks = ", ".join("?" * len(seen))
        conn.execute(f"DELETE FROM sync_worktrees WHERE repo = ? AND path NOT IN ({marks})",
                     (repo.common_dir, *seen))
        _record_conflicts(conn, ctx, pairs, now)


def _record_conflicts(conn, ctx, pairs, now):
    import json
    repo = ctx.repo.common_dir
    current = set()
    for p in pairs:
        key = (p["a"], p["b"])
        if not p["files"]:
            continue
        current.add(key)
        row = conn.execute("SELECT status FROM sync_conflicts WHERE repo = ? AND a = ? AND b = ?",
                           (repo, *key)).fetchone()
        if row is None:
            conn.execute("INSERT INTO sync_conflicts (repo, a, b, a_head, b_head, a_worktree, "
                         "b_worktree, files, status, first_seen, last_seen) VALUES "
                         "(?, ?, ?, ?, ?, ?, ?, ?, 'open', ?, ?)",
                         (repo, *key, p["a_head"], p["b_head"], p["a_worktree"],
                          p["b_worktree"], json.dumps(p["files"]), now, now))
        else:
            reopen = row["status"] != "open"
            conn.execute("UPDATE sync_conflicts SET a_head = ?, b_head = ?, a_worktree = ?, "
                         "b_worktree = ?, files = ?, status = 'open', last_seen = ?"
                         + (", first_seen = ?, notified = NULL" if reopen else "")
                         + " WHERE repo = ? AND a = ? AND b = ?",
                         (p["a_head"], p["b_head"], p["a_worktree"], p["b_worktree"],
                          json.dumps(p["files"]), now, *((now,) if reopen else ()), repo, *key))
    for row in conn.execute("SELECT a, b FROM sync_conflicts WHERE repo = ? AND status = 'open'",
                            (repo,)).fetchall():
        if (row["a"], row["b"]) not in current:
            conn.execute("UPDATE sync_conflicts SET status = 'resolved', last_seen = ? "
                         "WHERE repo = ? AND a = ? AND b = ?", (now, repo, row["a"], row["b"]))


def _conflict_note(row, side, files):
    shown = ", ".join(files[:10]) + (f" and {len(files) - 10} more" if len(files) > 10 else "")
    if row["b_worktree"] is None:
        return (f"orch-sync: your branch {row['a']} would conflict with {row['b']} in "
                f"{shown}. It was not merged; merge {row['b']} yourself and resolve it when "
                "you reach a good point.")
    other = row["b"] if side == "a" else row["a"]
    where = row["b_worktree"] if side == "a" else row["a_worktree"]
    return (f"orch-sync: your branch {row[side]} and {other} (worktree {where}) would conflict "
            f"in {shown}. Coordinate with the agent on {other} before either of you lands it.")


def notify(conn, ctx, outcomes=None):
    """Tell mapped agents about open conflicts with files they were not told about."""
    import hashlib
    import json

    from . import tasks
    repo = ctx.repo.common_dir
    rows = conn.execute("SELECT * FROM sync_conflicts WHERE repo = ? AND status = 'open'",
                        (repo,)).fetchall()
    for row in rows:
        files = json.loads(row["files"])
        told = json.loads(row["notified"] or "{}")
        changed = False
        for side in ("a", "b"):
            path = row[f"{side}_worktree"]
            if path is None:
                continue
            target = conn.execute("SELECT target, server FROM sync_targets WHERE worktree = ?",
                                  (os.path.realpath(path),)).fetchone()
            if target is None or set(files) <= set(told.get(side, [])):
                continue
            key = "orch-sync:" + hashlib.sha1(
                f"{repo}\0{row['a']}\0{row['b']}\0{side}".encode("utf-8", "surrogateescape")
            ).hexdigest()[:16]
            try:
                tasks.add(conn, target["target"], target["server"],
                          _conflict_note(row, side, files), clock.now(), key=key)
            except OrchError:
                continue  # being delivered right now, or the store is busy: next pass
            told[side] = sorted(set(told.get(side, [])) | set(files))
            changed = True
        if changed:
            with store.tx(conn):
                conn.execute("UPDATE sync_conflicts SET notified = ? WHERE repo = ? AND a = ? "
                             "AND b = ?", (json.dumps(told), repo, row["a"], row["b"]))


# --- processing events, passes and the daemon ---------------------------------------

def process(repo, force=False, once=False, stopping=None):
    """Pass over REPO while it has events (FORCE: at least once), one pass at a time
    per repository across all processes.  Returns the (outcomes, pairs) of each pass."""
    results = []
    with locks.held(lock_name(repo)):
        conn = store.connect()
        try:
            while not (stopping is not None and stopping.is_set()):
                lines = take_events(repo)
                if not lines and not force:
                    break
                force = False
                try:
                    results.append(sync_pass(conn, repo, lines))
                except BaseException:
                    _requeue(repo, lines)
                    raise
                _poke_peers(conn, repo, lines)
                if once:
                    break
        finally:
            conn.close()
    return results


def _requeue(repo, lines):
    """Put back the events of a pass that failed, so that a later run retries it."""
    if not lines:
        return
    try:
        fd = os.open(events_path(repo), os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.write(fd, "".join(f"{line}\n" for line in lines).encode("utf-8", "surrogateescape"))
    except OSError:
        pass
    finally:
        os.close(fd)


def failure_text(repo, error):
    """ERROR (an OrchError or a bug) as one line naming REPO, for a log or stderr."""
    text = str(error) if isinstance(error, OrchError) else \
        f"internal error: {type(error).__name__}: {error}"
    if not text.startswith(f"{repo.top}: "):
        text = f"{repo.top}: {text}"
    return cli.visible(text)


def run_events(repos, stopping=None, rounds=3):
    """Process the recorded events of REPOS, in parallel across repositories; repeat
    while a pass gave another repository an event (clones of one remote).  Returns
    a list of (repository top, one-line message naming it) for those that failed."""
    failed = {}
    for _ in range(rounds):
        todo = [r for r in repos if pending(r)]
        if not todo:
            break
        errors = _parallel_repos(todo, stopping)
        failed.update(errors)
    return sorted(failed.items())


def _parallel_repos(repos, stopping):
    def work(repo):
        try:
            process(repo, stopping=stopping)
        except Exception as e:  # noqa: BLE001 - reported with the others, as the daemon does
            return repo.top, failure_text(repo, e)
        return None

    if not repos:
        return {}
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(len(repos)) as pool:
        return dict(r for r in pool.map(work, repos) if r is not None)


def serve(daemon, only=None):
    """The daemon loop: a stat of each events file every POLL_S, a worker thread per
    repository with events, a full pass of each every SAFETY_PASS_S.  A repository
    whose pass failed (git gone, the store busy) is logged and tried again with a
    full pass after RETRY_S, doubling up to RETRY_MAX_S while it keeps failing."""
    import sys
    import threading
    conn = store.connect()
    workers, last_full, repos = {}, {}, []
    retry = {}  # repository -> (when to try again, the delay after that)
    last_reload = -RELOAD_S
    while not daemon.stopping.is_set():
        tick = time.monotonic()
        if tick - last_reload >= RELOAD_S:
            repos = list(only) if only else installed(conn)
            for repo in repos:
                try:
                    events_path(repo, create=True)
                except OrchError:
                    pass  # something else is in its place: the pass reports it
            last_reload = tick
        for repo in repos:
            key = repo.common_dir
            worker = workers.get(key)
            if worker is not None and worker.is_alive():
                continue
            again, delay = retry.get(key, (None, RETRY_S))
            if again is not None and tick < again:
                continue
            full = again is not None or tick - last_full.get(key, -SAFETY_PASS_S) >= SAFETY_PASS_S
            if not (full or pending(repo)):
                continue
            if full:
                last_full[key] = tick

            def work(repo=repo, full=full, key=key, delay=delay):
                try:
                    process(repo, force=full, stopping=daemon.stopping)
                    retry.pop(key, None)
                except Exception as e:  # noqa: BLE001 - keep serving the other repositories
                    print(f"orch-sync: error: {failure_text(repo, e)}", file=sys.stderr,
                          flush=True)
                    retry[key] = (time.monotonic() + delay, min(delay * 2, RETRY_MAX_S))

            workers[key] = threading.Thread(target=work, daemon=True)
            workers[key].start()
        daemon.sleep(POLL_S)
    for worker in workers.values():
        worker.join()
    conn.close()


# --- reading what was recorded (for status, the status file and orch-dash) ---------------

def recorded_repos(conn):
    """Every repository orch-sync knows, as dicts: repo (common git dir), top, hooks
    (None: not installed), base, policy, remote, last_pass, last_event (epoch), error."""
    rows = conn.execute("SELECT * FROM sync_repos ORDER BY top").fetchall()
    return [{"repo": r["repo"], "top": r["top"], "hooks": r["hooks"], "base": r["base"],
             "policy": r["policy"], "remote": r["remote"], "last_pass": r["last_pass"],
             "last_event": r["last_event"], "error": r["error"]} for r in rows]


def recorded_status(conn, repo=None):
    """What the last pass found per worktree, without running git: a list of dicts
    with repo, top, path, branch, head, base, ahead, behind, dirty (bool or None),
    state (synced, updated, skipped, conflict), reason, files (list), action,
    target (tmux target or None), checked and last_sync (epoch seconds or None)."""
    import json
    where, params = ("WHERE w.repo = ?", (repo,)) if repo else ("", ())
    rows = conn.execute(
        "SELECT w.*, r.top, t.target FROM sync_worktrees w JOIN sync_repos r ON r.repo = w.repo "
        f"LEFT JOIN sync_targets t ON t.worktree = w.path {where} ORDER BY r.top, w.path",
        params).fetchall()
    return [{"repo": r["repo"], "top": r["top"], "path": r["path"], "branch": r["branch"],
             "head": r["head"], "base": r["base"], "ahead": r["ahead"], "behind": r["behind"],
             "dirty": None if r["dirty"] is None else bool(r["dirty"]), "state": r["state"],
             "reason": r["reason"], "files": json.loads(r["files"] or "[]"),
             "action": r["action"], "target": r["target"], "checked": r["checked"],
             "last_sync": r["last_sync"]} for r in rows]


def recorded_conflicts(conn, repo=None, open_only=True):
    """Predicted conflicts as recorded, without running git: dicts with repo, a, b
    (branch names; b is the base when b_worktree is None), a_head, b_head,
    a_worktree, b_worktree, files (list), status (open, resolved), first_seen,
    last_seen (epoch seconds)."""
    import json
    clauses, params = [], []
    if repo:
        clauses.append("repo = ?")
        params.append(repo)
    if open_only:
        clauses.append("status = 'open'")
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = conn.execute(f"SELECT * FROM sync_conflicts {where} ORDER BY repo, a, b",
                        params).fetchall()
    return [{"repo": r["repo"], "a": r["a"], "b": r["b"], "a_head": r["a_head"],
             "b_head": r["b_head"], "a_worktree": r["a_worktree"], "b_worktree": r["b_worktree"],
             "files": json.loads(r["files"]), "status": r["status"],
             "first_seen": r["first_seen"], "last_seen": r["last_seen"]} for r in rows]


def state_text(row):
    """synced / updated: ACTION / skipped: REASON / conflict: FILES, as people read it."""
    state = row["state"]
    if state == "updated" and row.get("reason"):
        return f"updated: {row['reason']}"
    if state == "skipped":
        return f"skipped: {row['reason']}"
    if state == "conflict":
        return f"conflict: {', '.join(row['files'])}"
    return state


def attention(rows):
    """True when any worktree is skipped or in conflict (status exit 1)."""
    return any(r["state"] not in ("synced", "updated") for r in rows)


def daemon_pid():
    record_ = locks.read_holder(DAEMON_LOCK)
    return record_["pid"] if record_ else None


def status_path():
    return os.path.join(sync_dir(), "status.txt")


def status_text(conn, repo=None):
    """The view for people: per repository a heading, a table of its worktrees (named
    relative to the directory holding the repository) and its open conflicts."""
    out = []
    statuses = recorded_status(conn, repo)
    for r in recorded_repos(conn):
        if repo and r["repo"] != repo:
            continue
        rows = [w for w in statuses if w["repo"] == r["repo"]]
        last = clock.local(r["last_pass"]) if r["last_pass"] else "never"
        # Paths, branches, file names and messages may hold control characters:
        # every line goes through cli.visible or cli.table_lines, so each stays one line.
        out.append(f"{'' if not out else chr(10)}" + cli.visible(
            f"{r['top']}  (base {r['base'] or '?'}, policy {r['policy'] or 'merge'}, hooks "
            f"{'installed' if r['hooks'] else 'not installed'}, last pass {last})") + "\n")
        if r["error"]:
            out.append(f"  {cli.visible('error: ' + r['error'])}\n")
        table = cli.table_lines(
            [(_display(w["path"], r["top"]), w["branch"] or "-", (w["head"] or "-")[:7],
              _num(w["ahead"]), _num(w["behind"]),
              {True: "yes", False: "no"}.get(w["dirty"], "?"),
              clock.local(w["last_sync"], with_date=False) if w["last_sync"] else "-",
              state_text(w)) for w in rows],
            ["WORKTREE", "BRANCH", "HEAD", "AHEAD", "BEHIND", "DIRTY", "SYNCED", "STATE"],
            width=UNLIMITED)
        out.extend(f"  {line}\n" for line in table)
        for c in recorded_conflicts(conn, r["repo"]):
            out.append("  " + cli.visible(f"conflict: {c['a']} with {c['b']}: "
                                          f"{', '.join(c['files'])}") + "\n")
    return "".join(out)


def _display(path, top):
    parent = os.path.dirname(top.rstrip("/"))
    if parent not in ("", "/") and path.startswith(parent + "/"):
        return path[len(parent) + 1:]
    home = os.environ.get("HOME", "").rstrip("/")
    if home and path.startswith(home + "/"):
        return "~" + path[len(home):]
    return path


def _num(value):
    return "-" if value is None else value


def write_status_file(conn):
    with _status_file_lock:
        text = f"orch-sync status at {clock.local(clock.now())}\n\n{status_text(conn)}"
        paths.write_atomic(status_path(), text)


# --- the worktree -> tmux target map -----------------------------------------------------

def worktree_top(path):
    if not os.path.isdir(path):
        raise OrchError(f"not a directory: {path}", DATAERR)
    try:
        top = git.out(os.path.abspath(path), "rev-parse", "--show-toplevel")
    except git.GitError as e:
        raise OrchError(f"not a git worktree: {path} ({e})", DATAERR) from None
    return os.path.realpath(top)


def map_target(conn, path, target, server):
    top = worktree_top(path)
    with store.tx(conn):
        conn.execute("INSERT INTO sync_targets (worktree, target, server, created) VALUES "
                     "(?, ?, ?, ?) ON CONFLICT(worktree) DO UPDATE SET target = excluded.target, "
                     "server = excluded.server, created = excluded.created",
                     (top, target, server, clock.now()))
        # Tell the newly mapped agent about conflicts it was never told of.
        conn.execute("UPDATE sync_conflicts SET notified = NULL WHERE status = 'open' AND "
                     "(a_worktree = ? OR b_worktree = ?)", (top, top))
    return top


def unmap_target(conn, path):
    try:
        top = worktree_top(path)
    except OrchError:  # the worktree may be gone already
        top = os.path.realpath(path)
    with store.tx(conn):
        gone = conn.execute("DELETE FROM sync_targets WHERE worktree = ?", (top,)).rowcount
    return top if gone else None
