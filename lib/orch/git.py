"""The git runner: every git command orch runs, with a scrubbed environment.

Rules:
- Every call is `git -C DIR ...` with the variables that point git at a
  repository removed (GIT_DIR, GIT_WORK_TREE, GIT_INDEX_FILE, ...): hooks run
  with them set, and a command started from a hook would otherwise act on the
  hook's repository whatever DIR says.  Identity and configuration variables
  (GIT_AUTHOR_*, GIT_COMMITTER_*, GIT_CONFIG_*) are kept.  A caller that means
  a different index passes it explicitly (extra_env).
- Only plumbing output is parsed (--porcelain, -z), never text for people.
- git never prompts (stdin is /dev/null, GIT_TERMINAL_PROMPT=0) and never
  takes optional locks (GIT_OPTIONAL_LOCKS=0): looking at a worktree never
  contends with the agent's own git commands.
- git missing -> OrchError exit 69.  A git command that fails raises GitError
  (its status and first stderr line); the caller decides what that means.
- A value that came from configuration or the command line (a remote, a
  branch, a revision) is passed after --end-of-options, so it can never be
  read as an option.
"""

import os

from . import paths
from .errors import DATAERR, UNAVAILABLE, OrchError

SCRUB = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY",
         "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_COMMON_DIR", "GIT_PREFIX",
         "GIT_NAMESPACE", "GIT_CEILING_DIRECTORIES", "GIT_DISCOVERY_ACROSS_FILESYSTEM",
         "GIT_QUARANTINE_PATH", "GIT_REFLOG_ACTION")
ZERO = "0" * 40
_bin = None


class GitError(Exception):
    """A git command failed: .status, .stderr (first line), .args."""

    def __init__(self, args, status, stderr, stdout=b""):
        self.stdout = stdout
        lines = [line for line in stderr.decode(errors="replace").splitlines() if line.strip()]
        first = lines[0] if lines else f"git exited {status}"
        for prefix in ("fatal: ", "error: "):
            first = first.removeprefix(prefix)
        super().__init__(first)
        self.args_, self.status, self.stderr = args, status, first


def git_bin():
    global _bin
    if _bin is None:
        _bin = paths.which("git")
        if not _bin:
            raise OrchError("git is not installed (not found on PATH)", UNAVAILABLE)
    return _bin


def environ(extra=None):
    env = {k: v for k, v in os.environ.items() if k not in SCRUB}
    env["GIT_TERMINAL_PROMPT"] = "0"
    env["GIT_OPTIONAL_LOCKS"] = "0"
    env["LC_ALL"] = "C"
    if extra:
        env.update(extra)
    return env


def run(cwd, *args, input=None, ok=(0,), extra_env=None, timeout=300, started=None):
    """Run `git -C CWD ARGS...`; return the CompletedProcess (bytes).  Raises GitError.

    STARTED, when given, is called with the child's pid once it runs (before
    it is waited for), so that a caller can write it down."""
    import subprocess
    argv = [git_bin(), "-C", cwd, *args]
    stdin = subprocess.PIPE if input is not None else subprocess.DEVNULL
    try:
        child = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, env=environ(extra_env))
    except OSError as e:
        # The git found at start-up is gone (or no longer runnable): look it up
        # again next time, so a daemon carries on once git is back.
        global _bin
        _bin = None
        raise GitError(args, -1, f"cannot run {argv[0]}: {e.strerror}".encode()) from None
    with child:
        if started is not None:
            started(child.pid)
        try:
            stdout, stderr = child.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()
            raise GitError(args, -1, f"git {args[0]} did not finish within {timeout} s".encode()
                           ) from None
        except BaseException:
            child.kill()
            raise
    proc = subprocess.CompletedProcess(argv, child.returncode, stdout, stderr)
    if proc.returncode not in ok:
        raise GitError(args, proc.returncode, proc.stderr, proc.stdout)
    return proc


def out(cwd, *args, **kw):
    """The stdout of a git command as text, without the final newline."""
    return run(cwd, *args, **kw).stdout.decode("utf-8", "surrogateescape").rstrip("\n")


class Repo:
    """One repository, named by its common git directory (shared by all its worktrees)."""

    def __init__(self, common_dir, hooks_dir, bare):
        self.common_dir, self.hooks_dir, self.bare = common_dir, hooks_dir, bare

    @property
    def top(self):
        """The directory people name the repository by: the main worktree, or the bare dir."""
        if not self.bare and os.path.basename(self.common_dir) == ".git":
            return os.path.dirname(self.common_dir)
        return self.common_dir


def repo(directory):
    """The repository DIRECTORY belongs to (any of its worktrees, or the git dir itself)."""
    directory = os.path.abspath(directory)
    if not os.path.isdir(directory):
        raise OrchError(f"not a directory: {directory}", DATAERR)
    try:
        lines = out(directory, "rev-parse", "--path-format=absolute", "--git-common-dir",
                    "--git-path", "hooks", "--is-bare-repository").split("\n")
    except GitError as e:
        raise OrchError(f"not a git repository: {directory} ({e})", DATAERR) from None
    common, hooks, bare = lines[0], lines[1], lines[2] == "true"
    return Repo(os.path.realpath(common), os.path.abspath(hooks), bare)


def config(cwd, pattern):
    """{key: [values]} for config keys matching the regexp PATTERN (keys lower-cased by git)."""
    proc = run(cwd, "config", "-z", "--get-regexp", pattern, ok=(0, 1))
    found = {}
    for record in proc.stdout.split(b"\0"):
        if not record:
            continue
        key, _, value = record.decode("utf-8", "surrogateescape").partition("\n")
        found.setdefault(key, []).append(value)
    return found


class Worktree:
    def __init__(self, path):
        self.path, self.head, self.branch = path, None, None
        self.detached = self.bare = self.prunable = self.locked = False

    def __repr__(self):
        return f"Worktree({self.path!r}, {self.branch!r}, {self.head!r})"


def worktrees(cwd):
    """Every worktree of the repository, main first, from `worktree list --porcelain -z`."""
    data = run(cwd, "worktree", "list", "--porcelain", "-z").stdout.decode("utf-8",
                                                                           "surrogateescape")
    found, current = [], None
    for field in data.split("\0"):
        if not field:
            current = None
            continue
        word, _, value = field.partition(" ")
        if word == "worktree":
            current = Worktree(value)
            found.append(current)
        elif current is None:
            continue
        elif word == "HEAD":
            current.head = None if value == ZERO else value
        elif word == "branch":
            current.branch = value.removeprefix("refs/heads/")
        elif word in ("detached", "bare", "prunable", "locked"):
            setattr(current, word, True)
    return found


def worktree_git_dir(path):
    """The private git dir of the worktree at PATH, read from its .git (no git call)."""
    dot = os.path.join(path, ".git")
    if os.path.isdir(dot):
        return dot
    with open(dot, encoding="utf-8", errors="surrogateescape") as f:
        line = f.readline().strip()
    if not line.startswith("gitdir: "):
        raise OSError(f"{dot}: not a gitdir file")
    return os.path.normpath(os.path.join(path, line[len("gitdir: "):]))


def dirty(path):
    """True when the worktree at PATH has any staged, unstaged or untracked (not ignored) change."""
    # Options that settings could change are spelled out: showUntrackedFiles=no
    # or a submodule ignore setting must never make an edit invisible.
    proc = run(path, "status", "--porcelain=v2", "-z", "--untracked-files=normal",
               "--ignore-submodules=none", "--no-renames")
    return bool(proc.stdout)


def rev(cwd, name):
    """The commit NAME points at, or None when it does not exist."""
    proc = run(cwd, "rev-parse", "-q", "--verify", "--end-of-options", f"{name}^{{commit}}",
               ok=(0, 1, 128))
    value = proc.stdout.decode().strip()
    return value if proc.returncode == 0 and value else None


def counts(cwd, base, head):
    """(behind, ahead): commits of BASE not in HEAD, and of HEAD not in BASE."""
    text = out(cwd, "rev-list", "--left-right", "--count", "--end-of-options", f"{base}...{head}")
    behind, ahead = text.split()
    return int(behind), int(ahead)


def merge_tree(cwd, ours, theirs):
    """Predict merging THEIRS into OURS without touching any worktree.

    Returns (tree, files): the merged tree and the conflicting paths ([] when clean).
    Raises GitError when git cannot merge them at all (unrelated histories).
    """
    proc = run(cwd, "merge-tree", "--write-tree", "--name-only", "-z", "--no-messages",
               "--end-of-options", ours, theirs, ok=(0, 1))
    fields = proc.stdout.decode("utf-8", "surrogateescape").split("\0")
    tree, files = fields[0], [f for f in fields[1:] if f]
    if proc.returncode == 1 and not files:
        files = ["(unknown)"]
    return tree, sorted(set(files))


def merge_trees(cwd, pairs, jobs=None, trees=False):
    """Predict many merges at once: {(a, b): files or GitError} for commit pairs PAIRS
    ({(a, b): (tree, files) or GitError} with TREES).

    `merge-tree --stdin` does many merges in one process; the pairs are split
    into JOBS batches run in parallel.  A pair git refuses (unrelated
    histories) ends its batch: that pair gets the error, the rest are retried.
    """
    pairs = list(dict.fromkeys(pairs))
    if not pairs:
        return {}
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(pairs)))
    batches = [pairs[i::jobs] for i in range(jobs)]
    results = {}
    if len(batches) == 1:
        results = _merge_batch(cwd, batches[0])
    else:
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(len(batches)) as pool:
            for found in pool.map(lambda batch: _merge_batch(cwd, batch), batches):
                results.update(found)
    if trees:
        return results
    return {k: v if isinstance(v, GitError) else v[1] for k, v in results.items()}


def _merge_batch(cwd, pairs):
    results = {}
    while pairs:
        text = "".join(f"{a} {b}\n" for a, b in pairs).encode()
        try:
            proc = run(cwd, "merge-tree", "--stdin", "--name-only", "-z", "--no-messages",
                       input=text)
            failure = None
        except GitError as e:
            proc, failure = None, e
        data = proc.stdout if proc else failure.stdout
        done = _parse_batch(data, pairs, results)
        if failure is None and done == len(pairs):
            return results
        if failure is None:
            failure = GitError(("merge-tree",), 1, b"merge-tree stopped early")
        # The pair after the last complete answer is the one git refused.
        if done < len(pairs):
            a, b = pairs[done]
            try:
                results[(a, b)] = merge_tree(cwd, a, b)
            except GitError as e:
                results[(a, b)] = e
        pairs = pairs[done + 1:]
    return results


def _parse_batch(data, pairs, results):
    """Parse `merge-tree --stdin -z --name-only --no-messages` output into RESULTS.

    Each merge is: status NUL tree NUL [path NUL]... NUL, status 1 clean, 0 conflicted.
    Each answer is stored as (tree, files).  Returns how many complete answers were read.
    """
    fields = data.decode("utf-8", "surrogateescape").split("\0")
    i = done = 0
    while done < len(pairs) and i + 1 < len(fields):
        status = fields[i]
        if status not in ("0", "1"):
            break
        j = i + 2
        files = []
        while j < len(fields) and fields[j]:
            files.append(fields[j])
            j += 1
        if j > len(fields) - 2:
            break  # a record cut short: git died in the middle of it
        if status == "0" and not files:
            files = ["(unknown)"]
        results[pairs[done]] = (fields[i + 1], sorted(set(files)))
        done += 1
        i = j + 1
    return done


def diff_trees(cwd, pairs):
    """The paths each move from OLD to NEW changes, for many commit pairs in one git
    process: {(old, new): [(status, path), ...] or GitError}.

    `diff-tree --stdin` takes "NEW OLD" (a commit and the parent to compare it
    with); --always gives every line its header, the commit, even when nothing
    differs.  A status is one letter and a header a whole object id, so a path
    that looks like an id cannot be taken for a header.
    """
    pairs = list(dict.fromkeys(pairs))
    if not pairs:
        return {}
    text = "".join(f"{new} {old}\n" for old, new in pairs).encode()
    try:
        data = run(cwd, "diff-tree", "--stdin", "--always", "-r", "-z", "--no-renames",
                   "--name-status", input=text).stdout
    except GitError:
        return {pair: _diff_tree(cwd, *pair) for pair in pairs}  # find the one git refuses
    fields = data.decode("utf-8", "surrogateescape").split("\0")
    results, i = {}, 0
    for old, new in pairs:
        if i >= len(fields) or fields[i] != new:
            results[(old, new)] = GitError(("diff-tree",), 1, b"diff-tree --stdin lost its place")
            break
        i += 1
        changes = []
        while i + 1 < len(fields) and len(fields[i]) == 1:
            changes.append((fields[i], fields[i + 1]))
            i += 2
        results[(old, new)] = changes
    return results


def _diff_tree(cwd, old, new):
    try:
        data = run(cwd, "diff-tree", "-r", "-z", "--no-renames", "--name-status", old,
                   new).stdout.decode("utf-8", "surrogateescape").split("\0")
    except GitError as e:
        return e
    return list(zip(data[0::2], data[1::2], strict=False))
