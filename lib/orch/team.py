"""Teams: an orchestration brought up from a small team file, and taken down again.

Rules:
- This module only composes the others: orchestrations (the session name and
  registry), git worktrees, tmux windows, sync.hooks and sync.predict (hooks
  and the worktree-to-window map), tasks (the recurring check-ins).  It has no
  lock, session, sync or scheduling logic of its own.
- A team is known by the real path of its team file.  A team is running when
  its record is 'up' and its tmux session exists on the server it was made on.
- `up` runs under the lock orch-team.<project slug>, so that two `up`s of one
  file bring up one team and the worktrees of one project are made one team at
  a time.  Every step that creates something pushes how to undo it; if a step
  fails, the undos run in reverse and the step's error (and exit status) goes
  on.  Nothing that was there before (a worktree, a branch, installed hooks) is
  ever removed by an undo.
- The team's record (table teams) holds everything its `up` created (plan), so
  that `down` takes down exactly that.  `down` never removes a worktree with
  uncommitted changes or commits not on the base, nor one the team found there.
"""

import json
import os
import re
import shlex
import sys

from . import clock, git, locks, orchestrations, paths, store, tasks, text, tmux
from .errors import CANTCREAT, DATAERR, NO, NOINPUT, UNAVAILABLE, OrchError

ORCHESTRATOR = "orchestrator"
TOP_KEYS = {"project", "repo", "base", "worktrees", "orchestrator", "agent", "checkin"}
AGENT_KEYS = {"name", "command", "branch"}
ORCHESTRATOR_KEYS = {"command"}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,39}")
WIDTH, HEIGHT = 200, 50  # the windows' size until a client attaches
MAX_FILE = 1 << 20
# Words a shell runs itself: a command line starting with one is not looked up on PATH.
SHELL_WORDS = {".", ":", "[", "!", "{", "(", "builtin", "case", "cd", "command", "eval", "exec",
               "export", "for", "if", "nohup", "set", "source", "test", "time", "trap", "ulimit",
               "umask", "unset", "until", "while"}


class Agent:
    """An agent of the team file; WORKTREE is known once check() has found where
    worktrees go (the directory named SLOT there)."""

    def __init__(self, name, command, branch, slot):
        self.name, self.command, self.branch, self.slot = name, command, branch, slot
        self.worktree = None


class Team:
    """A team file, read and checked: nothing in it is looked up outside it yet."""

    def __init__(self, file, project, repo, base, worktrees, orchestrator, agents, checkins):
        self.file, self.project, self.repo, self.base = file, project, repo, base
        self.worktrees = worktrees
        self.orchestrator, self.agents, self.checkins = orchestrator, agents, checkins


# --- the team file -------------------------------------------------------------

def load(path):
    """Read and check the team file at PATH -> Team.  A bad file is OrchError(65)
    naming the key (and TOML's line, where the parser gives one)."""
    import stat
    import tomllib
    file = os.path.realpath(path)
    path = text.visible(path)  # it is in every message: one clean line whatever its name
    try:
        with open(file, "rb", buffering=0) as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise OrchError(f"cannot read the team file {path}: not a regular file",
                                NOINPUT)
            raw = f.read(MAX_FILE + 1)
    except OSError as e:
        raise OrchError(f"cannot read the team file {path}: {e.strerror}", NOINPUT) from None
    if len(raw) > MAX_FILE:
        raise OrchError(f"{path}: larger than {MAX_FILE // 1024} KiB: not a team file", DATAERR)
    try:
        data = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise OrchError(f"{path}: not TOML: {e}", DATAERR) from None
    where = os.path.dirname(file)
    _known(data, TOP_KEYS, path, "")
    project = _string(data, "project", path)
    base_slug = orchestrations.slug(project)
    repo = os.path.normpath(os.path.join(where, os.path.expanduser(_string(data, "repo", path))))
    base = _string(data, "base", path)
    worktrees = (None if data.get("worktrees") is None else  # None: the repository's parent
                 os.path.normpath(os.path.join(where, os.path.expanduser(
                     _string(data, "worktrees", path)))))
    orch = data.get(ORCHESTRATOR, {})
    if not isinstance(orch, dict):
        raise OrchError(f"{path}: {ORCHESTRATOR} must be a table", DATAERR)
    _known(orch, ORCHESTRATOR_KEYS, path, f"{ORCHESTRATOR}.")
    orchestrator = _string(orch, "command", path, ORCHESTRATOR + ".") if orch else None
    agents, names = [], {ORCHESTRATOR}
    for i, a in enumerate(_tables(data, "agent", path)):
        at = f"agent[{i}]."
        _known(a, AGENT_KEYS, path, at)
        name = _string(a, "name", path, at)
        if not _NAME.fullmatch(name):
            raise OrchError(f"{path}: {at}name: bad name {name!r} (a letter or _, then up to "
                            "39 letters, digits, _ or -)", DATAERR)
        if name in names:
            raise OrchError(f"{path}: {at}name: {name!r} is taken"
                            + (" (the orchestrator's window)" if name == ORCHESTRATOR else ""),
                            DATAERR)
        names.add(name)
        branch = _string(a, "branch", path, at) if "branch" in a else f"{base_slug}/{name}"
        agents.append(Agent(name, _string(a, "command", path, at), branch,
                            f"{base_slug}-{name}"))
    if not agents:
        raise OrchError(f"{path}: agent: a team needs at least one [[agent]]", DATAERR)
    checkins, keys = [], set()
    for i, c in enumerate(_tables(data, "checkin", path)):
        at = f"checkin[{i}]."
        window = c.get("target")
        if not isinstance(window, str) or window not in names:
            raise OrchError(f"{path}: {at}target: {window!r} is not a window of this team "
                            f"(want one of {', '.join(sorted(names))})", DATAERR)
        key = c.get("key", f"#{i}")  # (#N: its position, from 0)
        if not isinstance(key, str):
            raise OrchError(f"{path}: {at}key: must be a string", DATAERR)
        if key in keys:
            raise OrchError(f"{path}: {at}key: {key!r} is taken by another check-in", DATAERR)
        keys.add(key)
        try:  # as up will store it: the session is as long as a real one
            tasks.item(dict(c, target=f"{base_slug}-00000000:{window}",
                            key=f"{base_slug}-00000000:{key}"), "", clock.now(), "default",
                       check=True)
        except OrchError as e:
            raise OrchError(f"{path}: checkin[{i}]: {e}", DATAERR) from None
        c = dict(c, key=key)
        if "every" in c and not ("in" in c or "at" in c):
            c["in"] = c["every"]  # the first one period after the team starts
        checkins.append(c)
    return Team(file, project, repo, base, worktrees, orchestrator, agents, checkins)


def _known(table, keys, path, at):
    unknown = sorted(set(table) - keys)
    if unknown:
        raise OrchError(f"{path}: {at}{unknown[0]}: unknown key (want "
                        f"{', '.join(sorted(keys))})", DATAERR)


def _string(table, key, path, at=""):
    value = table.get(key)
    if not isinstance(value, str) or not value.strip():
        what = "missing" if value is None else "must be a non-empty string"
        raise OrchError(f"{path}: {at}{key}: {what}", DATAERR)
    if any(ord(ch) < 32 or 127 <= ord(ch) < 160 for ch in value):
        raise OrchError(f"{path}: {at}{key}: holds a control character", DATAERR)
    return value


def _tables(data, key, path):
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise OrchError(f"{path}: {key}: must be an array of tables ([[{key}]])", DATAERR)
    return value


# --- checks against the machine ------------------------------------------------------

def check(team):
    """What a step would find wrong before anything is made: the repository, its
    base, the branch names, the commands.  Returns the repository (git.Repo)."""
    repo = git.repo(team.repo)
    if repo.bare:
        raise OrchError(f"{team.repo} is a bare repository: name a worktree of it", DATAERR)
    where = team.worktrees or os.path.dirname(repo.top)
    for a in team.agents:
        a.worktree = os.path.join(where, a.slot)
    if not _commit(repo.top, team.base):
        raise OrchError(f"base {team.base!r} is not a commit in {team.repo}", DATAERR)
    for a in team.agents:
        try:
            git.out(repo.top, "check-ref-format", "--branch", a.branch)
        except git.GitError:
            raise OrchError(f"agent {a.name}: git refuses the branch name {a.branch!r}",
                            DATAERR) from None
    for who, command in [(ORCHESTRATOR, team.orchestrator)] + [(a.name, a.command)
                                                                for a in team.agents]:
        word = _program(command) if command else None
        if word and not paths.which(word):
            raise OrchError(f"{who}: command not found: {word}", UNAVAILABLE)
    return repo


def _program(command):
    """The program a shell command line starts (its first word after assignments)."""
    try:
        words = shlex.split(command)
    except ValueError:
        return None  # the shell will say what is wrong with it
    words = [w for w in words if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", w)]
    if not words or not words[0] or words[0] in SHELL_WORDS:
        return None  # the shell will say what is wrong with it, or run it
    return words[0] if not set(words[0]) & set("$`(){}<>|&;") else None


def _commit(cwd, name):
    try:
        return git.out(cwd, "rev-parse", "--verify", "--quiet", f"{name}^{{commit}}")
    except git.GitError:
        return None


def _worktree_on(repo, path):
    for wt in git.worktrees(repo.top):
        if os.path.realpath(wt.path) == os.path.realpath(path):
            return wt
    return None


def running(conn, file=None, session=None):
    """The running teams (of FILE, or SESSION) as their records (dicts).  A team
    whose tmux server gives no clear answer counts as running, with 'unknown'
    set: its worktrees are never taken, and up does not start it twice."""
    rows = conn.execute("SELECT * FROM teams WHERE status = 'up' ORDER BY created").fetchall()
    servers, out = {}, []
    for row in rows:
        if file is not None and row["file"] != file or session not in (None, row["session"]):
            continue
        if row["server"] not in servers:
            servers[row["server"]] = orchestrations.sessions_on(row["server"])
        names = servers[row["server"]]
        if names is None or row["session"] in names:
            out.append(dict(row, plan=json.loads(row["plan"]), unknown=names is None))
    return out


# --- up ------------------------------------------------------------------------

def plan_text(team):
    """What `up` would do, one step a line (--dry-run)."""
    slug = orchestrations.slug(team.project)
    lines = [f"lock orch-team.{slug}", f"orchestration {team.project!r}: session "
             f"{slug}-XXXXXXXX"]
    for a in team.agents:
        lines.append(f"worktree {a.worktree} on {a.branch} (from {team.base} unless it exists)")
    lines.append(f"window {ORCHESTRATOR} in {team.repo}: {team.orchestrator or '(shell)'}")
    lines += [f"window {a.name} in {a.worktree}: {a.command}" for a in team.agents]
    lines.append(f"orch-sync install {team.repo}")
    lines += [f"orch-sync map {a.worktree} SESSION:{a.name}" for a in team.agents]
    lines += [f"orch-sched add SESSION:{c['target']} "
              + " ".join(f"--{k} {c[k]}" for k in ("every", "in", "at") if k in c)
              + f" {c['note']!r}" for c in team.checkins]
    return "\n".join(lines) + "\n"


def up(conn, team, server):
    """Bring TEAM up on tmux SERVER; return (its record as a dict, created now)."""
    with locks.held(f"orch-team.{orchestrations.slug(team.project)}"):
        found = running(conn, file=team.file)
        if found and found[0]["unknown"]:
            raise OrchError(f"tmux on {found[0]['server']} does not answer: cannot tell whether "
                            f"team {found[0]['session']} is running", UNAVAILABLE)
        if found:
            return found[0], False
        repo = check(team)
        inherited = _clear_died(conn, team.file)
        undo = []
        try:
            return _up(conn, team, server, repo, undo, inherited), True
        except BaseException:
            for step in reversed(undo):
                try:
                    step()
                except Exception as e:  # noqa: BLE001 - undo the rest, and say what is left
                    print(f"orch-team: warning: could not undo a step: {e}", file=sys.stderr)
            raise


def _clear_died(conn, file):
    """An up of FILE whose record is still 'starting' while we hold the lock died
    half way (killed, a power loss): take down what its plan says it made, keeping
    its worktrees for this up to reuse.  Returns {worktree: what it made there}."""
    from .sync import predict
    inherited = {}
    for row in conn.execute("SELECT * FROM teams WHERE file = ? AND status = 'starting'",
                            (file,)).fetchall():
        plan = json.loads(row["plan"])
        tasks.cancel(conn, tasks.keyed(conn, f"{row['session']}:"))
        for a in plan["agents"]:
            predict.unmap_target(conn, a["worktree"])
            if a["created"]:
                inherited[a["worktree"]] = a
        _kill_session(row["server"], row["session"])
        orchestrations.discard(conn, row["session"])
        _forget(conn, row["session"])
    return inherited


def _up(conn, team, server, repo, undo, inherited):
    from .sync import hooks, predict, repos
    o = orchestrations.create(conn, team.project, server)
    session = o["session"]
    undo.append(lambda: orchestrations.discard(conn, session))
    plan = {"session": session, "project": team.project, "file": team.file,
            "repo": repo.top, "base": team.base, "server": server, "agents": [],
            "checkins": [], "hooks_installed": False}
    with store.tx(conn):
        conn.execute("INSERT INTO teams (session, file, project, server, status, plan, created) "
                     "VALUES (?, ?, ?, ?, 'starting', ?, ?)", (session, team.file, team.project,
                                                               server, json.dumps(plan),
                                                               clock.now()))
    undo.append(lambda: _forget(conn, session))

    def save():  # after each step: what a died up made is known to the next (_clear_died)
        with store.tx(conn):
            conn.execute("UPDATE teams SET plan = ? WHERE session = ?",
                         (json.dumps(plan), session))

    in_use = _in_use(conn)
    for a in team.agents:
        _worktree(repo, team, a, in_use, undo, inherited, plan["agents"], save)
    _tmux(server, "new-session", "-d", "-s", session, "-n", ORCHESTRATOR, "-x", str(WIDTH),
          "-y", str(HEIGHT), "-c", _literal(repo.top),
          *(["--", _command(team.orchestrator)] if team.orchestrator else []),
          ";", "set-option", "-w", "remain-on-exit", "on")
    undo.append(lambda: _kill_session(server, session))
    for a, made in zip(team.agents, plan["agents"], strict=True):
        made["window"] = _tmux(server, "new-window", "-d", "-P", "-F", "#{window_id}", "-t",
                               f"={session}:", "-n", a.name, "-c", _literal(a.worktree), "--",
                               _command(a.command), ";", "set-option", "-w", "-t",
                               f"={session}:{a.name}", "remain-on-exit", "on").decode().strip()
    save()
    if not any(r.common_dir == repo.common_dir for r in repos.installed(conn)):
        hooks.install(conn, repo)
        plan["hooks_installed"] = True
        undo.append(lambda: hooks.uninstall(conn, repo))
        save()
    for made in plan["agents"]:
        before = predict.target_of(conn, made["worktree"])
        predict.map_target(conn, made["worktree"], f"{session}:{made['name']}", server)
        undo.append(lambda path=made["worktree"], before=before: (
            predict.map_target(conn, path, *before) if before
            else predict.unmap_target(conn, path)))
    now = clock.now()
    account = os.environ.get("ORCH_ACCOUNT") or "default"
    items = [tasks.item(dict(c, target=f"{session}:{c['target']}", key=f"{session}:{c['key']}"),
                        server, now, account) for c in team.checkins]
    plan["checkins"] = tasks.add_many(conn, items) if items else []
    undo.append(lambda: tasks.cancel(conn, plan["checkins"]))
    with store.tx(conn):
        conn.execute("UPDATE teams SET status = 'up', plan = ? WHERE session = ?",
                     (json.dumps(plan), session))
    return running(conn, session=session)[0]


def _worktree(repo, team, agent, in_use, undo, inherited, made_list, save):
    """The agent's worktree, added to MADE_LIST: one there already on its branch and
    no running team's is reused (still the team's if a died up of this file made
    it: INHERITED); otherwise it is made (and its branch, if new) from the base,
    written down (SAVE) before git starts, so that a kill cannot hide it."""
    made = {"name": agent.name, "branch": agent.branch, "worktree": agent.worktree,
            "created": False, "branch_created": False}
    made_list.append(made)
    if os.path.lexists(agent.worktree):
        wt = _worktree_on(repo, agent.worktree)
        if wt is None or wt.branch != agent.branch:
            raise OrchError(f"agent {agent.name}: {agent.worktree} exists and is not a "
                            f"worktree of {repo.top} on {agent.branch}: move it away or name "
                            "another branch", CANTCREAT)
        if os.path.realpath(agent.worktree) in in_use:
            raise OrchError(f"agent {agent.name}: {agent.worktree} is used by a running team",
                            CANTCREAT)
        if agent.worktree in inherited:
            made.update(created=True,
                        branch_created=inherited[agent.worktree]["branch_created"])
        save()
        return
    new_branch = _commit(repo.top, f"refs/heads/{agent.branch}") is None
    made.update(created=True, branch_created=new_branch)
    save()

    def remove():  # made a moment ago by this up: nothing of anyone's is in it
        if os.path.lexists(agent.worktree):
            git.run(repo.top, "worktree", "remove", "--force", agent.worktree)
        git.run(repo.top, "worktree", "prune")
        if new_branch and _commit(repo.top, f"refs/heads/{agent.branch}"):
            git.run(repo.top, "branch", "-D", agent.branch)
    undo.append(remove)  # (before git runs: a half made worktree or branch goes too)
    args = (["-b", agent.branch, agent.worktree, team.base] if new_branch
            else [agent.worktree, agent.branch])
    try:
        git.run(repo.top, "worktree", "add", "--quiet", *args)
    except git.GitError as e:
        raise OrchError(f"agent {agent.name}: cannot make its worktree: {e}", CANTCREAT) from None


def _in_use(conn, but=None):
    """The worktrees of the running teams (but the one of session BUT)."""
    return {os.path.realpath(a["worktree"]) for t in running(conn) if t["session"] != but
            for a in t["plan"]["agents"]}


def _literal(path):
    """PATH as tmux's -c takes it: tmux expands #{...} formats there, and ## is one #."""
    return path.replace("#", "##")


def _command(command):
    """COMMAND as one tmux argument: one that ends in ';' would be read as tmux's
    command separator, so it gets a space after it."""
    return command + " " if command.endswith(";") else command


def _tmux(server, *args):
    try:
        return tmux.run(server, *args)
    except tmux.Missing as e:
        raise OrchError(f"tmux: {e}", UNAVAILABLE) from None


def _kill_session(server, session):
    try:
        tmux.run(server, "kill-session", "-t", f"={session}")
    except tmux.Missing:
        pass  # gone already


def _forget(conn, session):
    with store.tx(conn):
        conn.execute("DELETE FROM teams WHERE session = ?", (session,))


# --- down ------------------------------------------------------------------------

def down(conn, session, keep_worktrees=False):
    """Take the team of SESSION down; return [(worktree, why it was kept)]."""
    from .sync import predict
    row = conn.execute("SELECT * FROM teams WHERE session = ? AND status != 'down'",
                       (session,)).fetchone()
    if row is None:
        raise OrchError(f"no team {session!r} (orch-team ls lists them)", NO)
    plan = json.loads(row["plan"])
    tasks.cancel(conn, tasks.keyed(conn, f"{session}:"))  # every key of the team's
    others = _in_use(conn, but=session)  # a later team of this file may use them now
    for a in plan["agents"]:
        if os.path.realpath(a["worktree"]) not in others:
            predict.unmap_target(conn, a["worktree"])
    _kill_session(row["server"], session)
    orchestrations.end(conn, session)
    kept = []
    for a in plan["agents"]:
        path = a["worktree"]
        why = ("used by a running team" if os.path.realpath(path) in others
               else _keep(plan, a) or ("--keep-worktrees" if keep_worktrees and a["created"]
                                       and os.path.isdir(path) else None))
        if why:
            kept.append((path, why))
        elif a["created"]:
            try:  # (one deleted by hand leaves git a record to prune)
                git.run(plan["repo"], "worktree", *(["remove", path] if os.path.isdir(path)
                                                    else ["prune"]))
            except git.GitError as e:  # git's own refusal: the worktree stays, and why
                kept.append((path, str(e)))
                continue
            if a["branch_created"]:
                try:
                    git.run(plan["repo"], "branch", "-d", a["branch"])
                except git.GitError as e:
                    kept.append((f"branch {a['branch']}", str(e)))
    with store.tx(conn):
        conn.execute("UPDATE teams SET status = 'down', ended = ? WHERE session = ?",
                     (clock.now(), session))
    return kept


def _keep(plan, agent):
    """Why AGENT's worktree must stay, or None: uncommitted changes, commits not on
    the base (read in the repository, as up read it), it was there before the
    team, or git cannot tell (then it stays, and git's reason says why)."""
    path = agent["worktree"]
    if not os.path.isdir(path):
        return None
    try:
        if os.path.realpath(git.out(path, "rev-parse", "--show-toplevel")) != \
                os.path.realpath(path):
            return "not a worktree any more"
        if git.dirty(path):
            return "uncommitted changes"
        base = git.out(plan["repo"], "rev-parse", "--verify", f"{plan['base']}^{{commit}}")
        head = git.out(path, "rev-parse", "--verify", "HEAD")
        ahead = git.out(plan["repo"], "rev-list", "--count", f"{base}..{head}")
    except git.GitError as e:
        return f"cannot tell whether it holds work ({e})"
    if ahead != "0":
        return f"{ahead} commit{'s' if ahead != '1' else ''} not on {plan['base']}"
    if not agent["created"]:
        return "it was there before the team"
    return None


# --- ls ----------------------------------------------------------------------------

def listing(conn):
    """Every running team with its agents' windows: [(record, [agent dicts])], each
    agent with 'alive' (its window's program still runs: True/False/None)."""
    out = []
    panes = {}
    for t in running(conn):
        server = t["server"]
        if server not in panes:
            try:
                rows = tmux.run(server, "list-panes", "-a", "-F",
                                "#{session_name}\t#{window_id}\t#{pane_dead}").decode()
                panes[server] = {tuple(r.split("\t")[:2]): r.split("\t")[2] == "0"
                                 for r in rows.splitlines()}
            except tmux.Missing:
                panes[server] = {}
        agents = [dict(a, alive=panes[server].get((t["session"], a.get("window"))))
                  for a in t["plan"]["agents"]]
        out.append((t, agents))
    return out
