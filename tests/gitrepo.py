"""Real git repositories and worktrees in temporary directories, for the orch-sync tests.

Every repository starts with `git init -b main` and one commit; every command
runs with the caller's (hermetic) environment minus the variables that point
git somewhere else.
"""

import os
import stat
import subprocess

SCRUB = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR", "GIT_PREFIX",
         "ORCH_SYNC_QUIET")


def git(cwd, *args, check=True, input=None, env=None):
    """Run git in CWD; return stdout (text, stripped).  Fails the test on error if CHECK."""
    full = {k: v for k, v in os.environ.items() if k not in SCRUB}
    full.update(env or {})
    proc = subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True,
                          input=input, env=full, stdin=None if input else subprocess.DEVNULL,
                          timeout=60)
    if check and proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} in {cwd} failed ({proc.returncode}):\n"
                             f"{proc.stdout}{proc.stderr}")
    return proc.stdout.strip() if check else proc


def write(path, text):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


class Repo:
    """A repository at ROOT/main with linked worktrees ROOT/<branch> on branches of that name."""

    def __init__(self, root, branches=(), files=None):
        self.root = str(root)
        self.main = os.path.join(self.root, "main")
        os.makedirs(self.main)
        git(self.main, "init", "-q", "-b", "main")
        for name, text in (files or {"README": "readme\n"}).items():
            write(os.path.join(self.main, name), text)
        git(self.main, "add", "-A")
        git(self.main, "commit", "-q", "-m", "initial")
        self.trees = {"main": self.main}
        for branch in branches:
            self.add_worktree(branch)

    def add_worktree(self, branch, start="main"):
        path = os.path.join(self.root, branch)
        git(self.main, "worktree", "add", "-q", "-b", branch, path, start)
        self.trees[branch] = path
        return path

    def path(self, branch):
        return self.trees[branch]

    def commit(self, branch, files, message=None):
        """Write FILES ({name: text or None to delete}) in BRANCH's worktree and commit them."""
        path = self.trees[branch]
        for name, text in files.items():
            full = os.path.join(path, name)
            if text is None:
                git(path, "rm", "-q", name)
            else:
                write(full, text)
                git(path, "add", name)
        git(path, "commit", "-q", "-m", message or f"{branch}: {', '.join(files)}")
        return self.head(branch)

    def head(self, ref="main"):
        return git(self.main, "rev-parse", f"refs/heads/{ref}" if ref in self.trees else ref)

    def contains(self, ref, commit):
        """True if COMMIT is an ancestor of (or is) REF."""
        return git(self.main, "merge-base", "--is-ancestor", commit, ref,
                   check=False).returncode == 0

    def parents(self, commit):
        return git(self.main, "rev-list", "--parents", "-n1", commit).split()[1:]


def snapshot(path):
    """Every file under PATH (the worktree, not .git) with its bytes and mode, plus the
    index and HEAD of the worktree: equal snapshots mean nothing was touched."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(path):
        if ".git" in dirnames:
            dirnames.remove(".git")
        for name in filenames:
            if name == ".git":
                continue
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            with open(full, "rb") as f:
                found[os.path.relpath(full, path)] = (f.read(), stat.S_IMODE(st.st_mode))
    gitdir = git(path, "rev-parse", "--absolute-git-dir")
    for name in ("index", "HEAD"):
        try:
            with open(os.path.join(gitdir, name), "rb") as f:
                found[f"<{name}>"] = f.read()
        except FileNotFoundError:
            found[f"<{name}>"] = None
    found["<head>"] = git(path, "rev-parse", "HEAD", check=False).stdout
    return found


def tree_bytes(directory):
    """Every entry under DIRECTORY: relative name -> (kind, mode, bytes or link target)."""
    found = {}
    for name in sorted(os.listdir(directory)):
        full = os.path.join(directory, name)
        st = os.lstat(full)
        if stat.S_ISLNK(st.st_mode):
            found[name] = ("link", None, os.readlink(full))
        elif stat.S_ISDIR(st.st_mode):
            found[name] = ("dir", stat.S_IMODE(st.st_mode), tree_bytes(full))
        else:
            with open(full, "rb") as f:
                found[name] = ("file", stat.S_IMODE(st.st_mode), f.read())
    return found


def fire_hooks(worktree, message="still works"):
    """Commit a file and switch to a new branch in WORKTREE (both run orch-sync's hooks);
    assert that git did both and said nothing."""
    write(os.path.join(worktree, "f"), "x\n")
    git(worktree, "add", "f")
    committed = git(worktree, "commit", "-q", "-m", message, check=False)
    assert (committed.returncode, committed.stderr) == (0, "")
    switched = git(worktree, "switch", "-q", "-c", "b2", check=False)
    assert (switched.returncode, switched.stderr) == (0, "")
