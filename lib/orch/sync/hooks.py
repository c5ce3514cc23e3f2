"""Installing and removing orch-sync's git hooks.

Rules:
- Hooks go into the repository's common hooks directory (or core.hooksPath),
  which every worktree shares.  A hook that was there is renamed NAME.orch-chained
  and run by ours with the same arguments and input, its exit status passed on;
  uninstall renames it back, so the directory ends byte for byte as it was.
  Our hooks are recognised by their second line (MARKER).
- Install and uninstall are all or nothing: the database row is written
  first, in a write transaction held while the files change; each file change
  records how to undo it, and a failure (of a file change or of the commit)
  undoes them all.
"""

import os

from .. import clock, git, paths, store
from ..errors import CANTCREAT, UNAVAILABLE, OrchError
from . import context, events, repos

HOOKS = ("reference-transaction", "post-checkout")


CHAINED = ".orch-chained"


MARKER = "# orch-sync hook:"


CREATED = "# orch-sync: this hooks directory was created by orch-sync install"


def hook_dirs():
    """Where the hook scripts may be, in order: a checkout (lib/orch -> hooks),
    `make install` ($PREFIX/lib/orch/orch -> $PREFIX/share/orch/hooks), and pip's
    data files (<prefix>/share/orch/hooks, for the venv's or the user's prefix)."""
    import site
    import sys
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the orch package
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


def render_hook(source, events_file, wake_file, created):
    """Our hook SOURCE with the events file and the wake FIFO written in (and the
    created-directory mark)."""
    lines = source.split("\n")
    for name, value in (("events", events_file), ("wake", wake_file)):
        for i, line in enumerate(lines):
            if line.startswith(f"{name}="):
                lines[i] = f"{name}={_sh_quote(value)}"
                break
        else:
            raise OrchError(f"a hook script has no {name}= line", UNAVAILABLE)
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
    ctx = context.load(repo)
    remote = ctx.cfg.get("orch.remote")
    url = repos.normal_url(ctx.cfg.get(f"remote.{remote}.url"), ctx.cwd) if remote else None
    undo = []
    try:
        with store.tx(conn):
            repos.register_rows(conn, repo, hooks=hooks, remote=remote, remote_url=url)
            _install_files(repo, hooks, texts, undo)
    except BaseException:
        _undo(undo)
        raise
    events.wake()  # a running daemon serves it from now on
    return hooks


def _install_files(repo, hooks, texts, undo):
    """Write our hooks (and the events file), appending to UNDO how to take each step back."""
    log = events.events_path(repo)
    if not os.path.lexists(log):
        events.events_path(repo, create=True)
        undo.append(lambda: os.unlink(log))
    else:
        events.events_path(repo, create=True)  # refuses a symlink planted there
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
        _write_hook(path, render_hook(texts[name], log, events.wake_path(), mark))
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
        os.unlink(events.events_path(repo))
    except OSError:
        pass
    return warnings
