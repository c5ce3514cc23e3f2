"""What a pass knows about its repository: configuration, policy, base, identity.

Rules: orch.remote and orch.base reach git as arguments: a remote must be a
configured remote's name, neither may start with '-', and both are passed
after --end-of-options.  A base that cannot be found (or a failed fetch) is
kept as the context's error, never raised: the pass reports it and records
nothing it could not see.
"""

import os

from .. import git
from ..errors import UNAVAILABLE, OrchError
from . import QUIET, repos

POLICIES = ("merge", "ff-only", "rebase", "report")


FALLBACK_NAME, FALLBACK_EMAIL = "orch-sync", "orch-sync@localhost"


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
            self.remote_url = repos.normal_url(self.cfg.get(f"remote.{self.remote}.url"), self.cwd)
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


def load(repo):
    try:
        return Context(repo)
    except git.GitError as e:
        raise OrchError(f"{repo.top}: cannot read its configuration: {e}", UNAVAILABLE) from None


def worktrees(ctx):
    try:
        trees = [w for w in git.worktrees(ctx.cwd) if not w.bare]
    except git.GitError as e:
        raise OrchError(f"{ctx.repo.top}: cannot list worktrees: {e}", UNAVAILABLE) from None
    for w in trees:
        w.path = os.path.realpath(w.path)  # the map and the records use real paths
    return trees
