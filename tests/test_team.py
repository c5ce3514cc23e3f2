"""orch-team: a team brought up from a team file on a private tmux server, over a real
repository, and taken down again; a failure half way leaves nothing behind; two ups
of one file make one team; a bad team file gets one line naming the key."""

import json
import os
import re
import subprocess
import sys
import time
from datetime import datetime

import pytest
from conftest import AGENT, wait_until
from gitrepo import Repo, git, write

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))

from orch import store  # noqa: E402
from orch.sync import hooks  # noqa: E402


def team_file(tmp_path, name="team.toml", project="myapp", agents=("backend", "frontend"),
              extra="", checkins=True, branches=None, commands=None):
    """A team file beside the repository (tmp_path/repo/main) whose agents are stand-ins
    recording what they receive in tmp_path/<agent>.rec."""
    lines = [f'project = "{project}"', 'repo = "repo/main"', 'base = "main"', extra,
             "[orchestrator]", f'command = "{sys.executable} {AGENT} {tmp_path}/orch.rec"']
    for agent in agents:
        command = (commands or {}).get(agent, f"{sys.executable} {AGENT} {tmp_path}/{agent}.rec")
        lines += ["[[agent]]", f'name = "{agent}"', f'command = "{command}"']
        if branches and agent in branches:
            lines.append(f'branch = "{branches[agent]}"')
    if checkins:
        lines += ["[[checkin]]", 'target = "orchestrator"', 'every = "30m"',
                  'note = "Status report please"']
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def edit(path, old, new):
    with open(path) as f:
        text = f.read()
    assert old in text
    with open(path, "w") as f:
        f.write(text.replace(old, new))


def commit_work(worktree):
    """An agent's commit in WORKTREE: work its branch has and the base has not."""
    write(os.path.join(worktree, "f.txt"), "work\n")
    git(worktree, "add", "f.txt")
    git(worktree, "commit", "-q", "-m", "work")


def sessions(tmux):
    return sorted(tmux("list-sessions", "-F", "#{session_name}", check=False).split())


def windows(tmux, session):
    out = tmux("list-windows", "-t", f"={session}", "-F", "#{window_name}\t#{pane_current_path}")
    return dict(line.split("\t") for line in out.splitlines())


def worktrees(repo):
    found, path = {}, None
    for line in git(repo.main, "worktree", "list", "--porcelain").splitlines():
        if line.startswith("worktree "):
            path = line[len("worktree "):]
            found[path] = None
        elif line.startswith("branch "):
            found[path] = line[len("branch refs/heads/"):]
    return found


def checkins(run):
    r = run("orch-sched", "list", "--all", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def mapped():
    conn = store.connect()
    try:
        return {r[0]: r[1] for r in conn.execute("SELECT worktree, target FROM sync_targets")}
    finally:
        conn.close()


def orchestrations(run):
    r = run("orch-lock", "ls", "--all", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_up_makes_the_whole_team_and_down_takes_it_away(tmp_path, tmux, run):
    repo = Repo(tmp_path / "repo")
    path = team_file(tmp_path, branches={"frontend": "feat/front"})
    before = time.time()
    r = run("orch-team", "up", path)
    assert r.returncode == 0, r.stderr
    [session] = r.stdout.splitlines()
    assert re.fullmatch(r"myapp-[0-9a-f]{8}", session)
    assert sessions(tmux) == [session]
    back, front = (str(tmp_path / "repo" / f"myapp-{a}") for a in ("backend", "frontend"))
    assert windows(tmux, session) == {"orchestrator": repo.main, "backend": back,
                                      "frontend": front}
    for agent in ("orch", "backend", "frontend"):  # each command started, in its window
        wait_until(lambda a=agent: os.path.exists(tmp_path / f"{a}.rec"), what=f"{agent} up")
    assert worktrees(repo) == {repo.main: "main", back: "myapp/backend", front: "feat/front"}
    assert all(hooks.is_ours(os.path.join(repo.main, ".git", "hooks", h)) for h in hooks.HOOKS)
    assert mapped() == {back: f"{session}:backend", front: f"{session}:frontend"}
    [task] = checkins(run)
    assert (task["target"], task["every_s"], task["status"]) == (f"{session}:orchestrator",
                                                                 1800.0, "pending")
    assert task["key"] == f"{session}:#0"
    # The first status report comes one period after the start.
    due = datetime.fromisoformat(task["due"].replace("Z", "+00:00")).timestamp()
    assert before + 1800 - 1 <= due <= time.time() + 1800

    again = run("orch-team", "up", path)  # running: the same session, nothing new
    assert (again.returncode, again.stdout) == (0, f"{session}\n")
    assert sessions(tmux) == [session] and len(checkins(run)) == 1
    assert len(orchestrations(run)) == 1

    ls = run("orch-team", "ls", "--json")
    assert ls.returncode == 0, ls.stderr
    [listed] = json.loads(ls.stdout)
    assert listed["session"] == session and listed["file"] == os.path.realpath(path)
    assert [(a["name"], a["alive"]) for a in listed["agents"]] == [("backend", True),
                                                                   ("frontend", True)]

    write(os.path.join(back, "notes.txt"), "the agent's own work\n")  # untracked: uncommitted
    down = run("orch-team", "down", session)
    assert down.returncode == 0, down.stderr
    assert down.stderr == f"orch-team: kept {back}: uncommitted changes\n"
    assert sessions(tmux) == []
    assert worktrees(repo) == {repo.main: "main", back: "myapp/backend"}
    assert not os.path.exists(front)
    assert git(repo.main, "branch", "--list", "feat/front") == ""
    assert [t["status"] for t in checkins(run)] == ["cancelled"]
    assert mapped() == {}
    assert [o["state"] for o in orchestrations(run)] == ["ended"]
    assert run("orch-team", "ls", "--porcelain").stdout == ""
    gone = run("orch-team", "down", session)
    assert gone.returncode == 1 and "no team" in gone.stderr


def test_an_existing_worktree_on_the_agents_branch_is_reused_never_overwritten(tmp_path, tmux,
                                                                              run):
    repo = Repo(tmp_path / "repo")
    back = str(tmp_path / "repo" / "myapp-backend")
    git(repo.main, "worktree", "add", "-q", "-b", "myapp/backend", back)
    write(os.path.join(back, "draft.txt"), "work in progress\n")
    path = team_file(tmp_path, agents=("backend",), checkins=False)
    r = run("orch-team", "up", path)
    assert r.returncode == 0, r.stderr
    session = r.stdout.strip()
    assert windows(tmux, session)["backend"] == back
    with open(os.path.join(back, "draft.txt")) as f:
        assert f.read() == "work in progress\n"
    down = run("orch-team", "down", session)
    assert down.returncode == 0
    assert os.path.exists(os.path.join(back, "draft.txt"))  # it was never the team's


def test_a_worktree_path_taken_by_something_else_fails_cleanly(tmp_path, tmux, run):
    Repo(tmp_path / "repo")
    os.makedirs(tmp_path / "repo" / "myapp-frontend")
    write(str(tmp_path / "repo" / "myapp-frontend" / "mine.txt"), "not a worktree\n")
    r = run("orch-team", "up", team_file(tmp_path))
    assert r.returncode == 73
    assert len(r.stderr.splitlines()) == 1 and "myapp-frontend exists" in r.stderr
    assert_nothing_left(tmp_path, tmux, run)
    assert os.path.exists(tmp_path / "repo" / "myapp-frontend" / "mine.txt")


def assert_nothing_left(tmp_path, tmux, run):
    repo_main = str(tmp_path / "repo" / "main")
    assert list(worktrees(type("R", (), {"main": repo_main}))) == [repo_main]
    assert git(repo_main, "branch", "--format=%(refname:short)").split() == ["main"]
    assert sessions(tmux) == []
    assert orchestrations(run) == []
    assert checkins(run) == []
    assert mapped() == {}
    assert not any(os.path.exists(os.path.join(repo_main, ".git", "hooks", h))
                   for h in hooks.HOOKS)
    conn = store.connect()
    assert conn.execute("SELECT COUNT(*) FROM teams").fetchone()[0] == 0
    registry = os.path.join(os.environ["ORCH_HOME"], "orchestrations")
    assert not os.path.exists(registry) or os.listdir(registry) == []


def test_a_failure_half_way_undoes_everything_that_up_made(tmp_path, tmux, run):
    # The second agent's branch is checked out in the main worktree already: git
    # refuses it after the orchestration and the first worktree were made.
    Repo(tmp_path / "repo")
    path = team_file(tmp_path, agents=("one", "two"), branches={"two": "main"})
    r = run("orch-team", "up", path)
    assert r.returncode == 73
    assert r.stderr.startswith("orch-team: error: agent two: cannot make its worktree")
    assert len(r.stderr.splitlines()) == 1
    assert_nothing_left(tmp_path, tmux, run)


@pytest.mark.parametrize("change, status, says", [
    ({"two": "no such program"}, 69, "two: command not found: no"),
    ({"branch": "bad..name"}, 65, "git refuses the branch name 'bad..name'"),
])
def test_what_can_be_seen_before_starting_stops_up_before_anything_is_made(
        tmp_path, tmux, run, change, status, says):
    Repo(tmp_path / "repo")
    path = team_file(tmp_path, agents=("one", "two"),
                     branches={"one": change["branch"]} if "branch" in change else None,
                     commands={"two": change["two"]} if "two" in change else None)
    r = run("orch-team", "up", path)
    assert r.returncode == status and says in r.stderr, r.stderr
    assert_nothing_left(tmp_path, tmux, run)


def test_two_ups_of_one_team_file_at_once_make_one_team(tmp_path, tmux, run):
    Repo(tmp_path / "repo")
    path = team_file(tmp_path)
    procs = [subprocess.Popen(["orch-team", "up", path], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=60) + (p.returncode,) for p in procs]
    assert [r[2] for r in results] == [0, 0], results
    assert results[0][0] == results[1][0]
    assert sessions(tmux) == [results[0][0].strip()]
    assert len(checkins(run)) == 1 and len(orchestrations(run)) == 1


def test_two_team_files_of_one_project_are_two_teams(tmp_path, tmux, run):
    repo = Repo(tmp_path / "repo")
    os.makedirs(tmp_path / "elsewhere")
    first = team_file(tmp_path, name="a.toml")
    second = team_file(tmp_path, name="b.toml", extra=f'worktrees = "{tmp_path}/elsewhere"',
                       branches={"backend": "b/backend", "frontend": "b/frontend"})
    one, two = (run("orch-team", "up", p) for p in (first, second))
    assert (one.returncode, two.returncode) == (0, 0), (one.stderr, two.stderr)
    assert one.stdout != two.stdout and sessions(tmux) == sorted([one.stdout.strip(),
                                                                  two.stdout.strip()])
    trees = worktrees(repo)
    assert len(trees) == 5 and len(set(trees.values())) == 5
    # A third file whose agent wants a branch another team's worktree has: refused.
    third = team_file(tmp_path, name="c.toml", agents=("x",), checkins=False,
                      branches={"x": "myapp/backend"})
    r = run("orch-team", "up", third)
    assert r.returncode == 73 and "already" in r.stderr
    assert len(worktrees(repo)) == 5 and len(sessions(tmux)) == 2


def test_dry_run_prints_the_plan_and_makes_nothing(tmp_path, tmux, run):
    Repo(tmp_path / "repo")
    r = run("orch-team", "up", "--dry-run", team_file(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "worktree " + str(tmp_path / "repo" / "myapp-backend") in r.stdout
    assert "orch-sched add SESSION:orchestrator --every 30m" in r.stdout
    assert_nothing_left(tmp_path, tmux, run)


BAD = [
    ('repo = "r"\nbase = "main"\n[[agent]]\nname = "a"\ncommand = "sh"\n', "project: missing"),
    ('project = "p"\nrepo = "r"\nbase = "main"\nagents = 1\n', "agents: unknown key"),
    ('project = "p"\nrepo = "r"\nbase = "main"\n', "agent: a team needs at least one"),
    ('project = "p"\nrepo = "r"\nbase = "main"\n[[agent]]\nname = "a"\n', "agent[0].command: "
     "missing"),
    ('project = "p"\nrepo = "r"\nbase = "main"\n[[agent]]\nname = "orchestrator"\ncommand = "sh"\n',
     "agent[0].name: 'orchestrator' is taken"),
    ('project = "p"\nrepo = "r"\nbase = "main"\n[[agent]]\nname = "-x"\ncommand = "sh"\n',
     "agent[0].name: bad name"),
    ('project = "p"\nrepo = "r"\nbase = "main"\n[[agent]]\nname = "a"\ncommand = "sh"\n'
     '[[checkin]]\ntarget = "nobody"\nnote = "hi"\n',
     "checkin[0].target: 'nobody' is not a window"),
    ('project = "p"\nrepo = "r"\nbase = "main"\n[[agent]]\nname = "a"\ncommand = "sh"\n'
     '[[checkin]]\ntarget = "a"\nnote = "hi\\u001b[31m"\n', "checkin[0]: "),
    ('project = "p"\nrepo = "r"\nbase = "main"\n[[agent]]\nname = "a"\ncommand = "sh"\n'
     '[[checkin]]\ntarget = "a"\nnote = "hi"\nevery = "often"\n', "checkin[0]: bad every"),
    ('project = "p"\nrepo = = "r"\n', "not TOML: "),
    ('project = "p"\nrepo = "r"\nbase = "main"\n[orchestrator]\nkommand = "sh"\n',
     "orchestrator.kommand: unknown key"),
    ('project = "p"\nrepo = "r"\nbase = "main"\n[[agent]]\nname = "a"\ncommand = "sh"\n'
     '[[checkin]]\ntarget = ["a"]\nnote = "hi"\n', "checkin[0].target: ['a'] is not a window"),
    ('project = "p"\nrepo = "r"\nbase = "main"\n[[agent]]\nname = "a"\ncommand = "sh"\n'
     '[[checkin]]\ntarget = "a"\nnote = "hi"\ncatch_up = "bogus"\n',
     "checkin[0]: bad catch-up policy"),
    ('project = "p"\nrepo = "r"\nbase = "main"\n[[agent]]\nname = "a"\ncommand = "sh"\n'
     '[[checkin]]\ntarget = "a"\nnote = "one"\nkey = "k"\n'
     '[[checkin]]\ntarget = "a"\nnote = "two"\nkey = "k"\n', "checkin[1].key: 'k' is taken"),
    ('project = "p\\u009b31m"\nrepo = "r"\nbase = "main"\n', "project: holds a control"),
]


@pytest.mark.parametrize("text, says", BAD)
def test_a_bad_team_file_gets_one_line_naming_the_key_and_65(tmp_path, run, text, says):
    path = tmp_path / "team.toml"
    path.write_text(text)
    r = run("orch-team", "up", str(path))
    assert r.returncode == 65, r.stderr
    assert len(r.stderr.splitlines()) == 1 and says in r.stderr, r.stderr
    assert r.stdout == ""


def test_a_toml_error_names_its_line_and_a_missing_file_is_66(tmp_path, run):
    path = tmp_path / "team.toml"
    path.write_text('project = "p"\n\nrepo = = "r"\n')
    r = run("orch-team", "up", str(path))
    assert r.returncode == 65 and "line 3" in r.stderr
    r = run("orch-team", "up", str(tmp_path / "none.toml"))
    assert r.returncode == 66 and "cannot read the team file" in r.stderr


def test_ls_shows_an_agent_whose_program_ended_and_up_json_says_what_was_made(tmp_path, tmux,
                                                                             run):
    Repo(tmp_path / "repo")
    path = team_file(tmp_path, agents=("done", "alive"), checkins=False,
                     commands={"done": "true"})
    r = run("orch-team", "up", "--json", path)
    assert r.returncode == 0, r.stderr
    made = json.loads(r.stdout)
    assert [(a["name"], a["created"], a["branch_created"]) for a in made["agents"]] == [
        ("done", True, True), ("alive", True, True)]
    assert made["hooks_installed"] is True and made["checkins"] == []

    def states():
        out = run("orch-team", "ls", "--porcelain").stdout
        return {line.split("\t")[1]: line.split("\t")[3] for line in out.splitlines()}
    wait_until(lambda: states() == {"done": "exited", "alive": "running"},
               what="the ended agent shown as exited")
    assert sessions(tmux) == [made["session"]]  # its window stays, for a person to read


def test_an_up_killed_half_way_is_cleared_by_the_next_up(tmp_path, tmux, run):
    import signal
    repo = Repo(tmp_path / "repo")
    path = team_file(tmp_path, agents=tuple(f"a{i}" for i in range(8)), checkins=False)

    def status():
        conn = store.connect()
        try:
            return [tuple(r) for r in conn.execute("SELECT session, status FROM teams")]
        finally:
            conn.close()

    for _ in range(5):  # until the kill lands after the session, before the end
        proc = subprocess.Popen(["orch-team", "up", path], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        wait_until(lambda p=proc: sessions(tmux) or p.poll() is not None, interval=0.002,
                   what="the session")
        os.kill(proc.pid, signal.SIGSTOP)
        found = status()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        if found and found[0][1] == "starting":
            dead = found[0][0]
            break
        for session, _ in found:
            assert run("orch-team", "down", session).returncode == 0
    else:
        pytest.fail("no kill landed half way in 5 tries")
    r = run("orch-team", "up", path)
    assert r.returncode == 0, r.stderr
    session = r.stdout.strip()
    assert session != dead and sessions(tmux) == [session]
    assert status() == [(session, "up")]
    assert [o["session"] for o in orchestrations(run)] == [session]
    assert len(worktrees(repo)) == 9
    down = run("orch-team", "down", session)
    assert (down.returncode, down.stderr) == (0, "")
    assert list(worktrees(repo)) == [repo.main]  # the died up's worktrees were the team's
    assert git(repo.main, "branch", "--format=%(refname:short)").split() == ["main"]


def test_down_of_a_dead_team_leaves_the_worktrees_a_running_one_uses(tmp_path, tmux, run):
    repo = Repo(tmp_path / "repo")
    path = team_file(tmp_path, agents=("backend",), checkins=False)
    old = run("orch-team", "up", path).stdout.strip()
    back = str(tmp_path / "repo" / "myapp-backend")
    tmux("kill-session", "-t", f"={old}")           # the team's session dies
    new = run("orch-team", "up", path).stdout.strip()  # and is brought up again
    assert new and new != old
    r = run("orch-team", "down", old)
    assert r.returncode == 0
    assert r.stderr == f"orch-team: kept {back}: used by a running team\n"
    assert back in worktrees(repo) and mapped() == {back: f"{new}:backend"}
    assert sessions(tmux) == [new]


def test_paths_and_commands_reach_tmux_as_written(tmp_path, tmux, run):
    # tmux expands #{...} in a start directory, and takes a last ';' for its own.
    root = tmp_path / "#{session_name}"
    Repo(root / "repo")
    path = team_file(root, agents=("semi",), checkins=False,
                     commands={"semi": f"find . -maxdepth 0 -exec {sys.executable} {AGENT} "
                                       f"{tmp_path}/semi.rec \\\\;"})
    r = run("orch-team", "up", path)
    assert r.returncode == 0, r.stderr
    got = windows(tmux, r.stdout.strip())
    assert got == {"orchestrator": str(root / "repo" / "main"),
                   "semi": str(root / "repo" / "myapp-semi")}
    wait_until(lambda: os.path.exists(tmp_path / "semi.rec"), what="the agent started")


def test_a_worktree_git_cannot_make_leaves_no_branch(tmp_path, tmux, run):
    Repo(tmp_path / "repo")
    r = run("orch-team", "up", team_file(tmp_path, extra='worktrees = "/proc/orch-none"'))
    assert r.returncode == 73 and "cannot make its worktree" in r.stderr
    assert_nothing_left(tmp_path, tmux, run)


def test_a_failed_up_leaves_a_map_that_was_there(tmp_path, tmux, run):
    repo = Repo(tmp_path / "repo")
    back = str(tmp_path / "repo" / "myapp-backend")
    git(repo.main, "worktree", "add", "-q", "-b", "myapp/backend", back)
    assert run("orch-sync", "map", back, "keep:0").returncode == 0
    # The second agent's branch is checked out already: up fails at its worktree,
    # after the first agent's (the mapped one) was taken for reuse.
    path = team_file(tmp_path, agents=("backend", "two"), branches={"two": "main"})
    assert run("orch-team", "up", path).returncode == 73
    assert mapped() == {back: "keep:0"}


def test_down_keeps_what_it_cannot_judge_and_work_not_on_the_base(tmp_path, tmux, run):
    repo = Repo(tmp_path / "repo")
    git(repo.main, "branch", "integ")
    path = team_file(tmp_path, agents=("gone", "ahead"), checkins=False)
    edit(path, 'base = "main"', 'base = "integ"')
    session = run("orch-team", "up", path).stdout.strip()
    ahead = str(tmp_path / "repo" / "myapp-ahead")
    commit_work(ahead)
    git(repo.main, "branch", "-D", "integ")           # the base is gone
    r = run("orch-team", "down", session)
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 2 and all("cannot tell whether it holds work" in x for x in lines)
    assert len(worktrees(repo)) == 3
    assert run("orch-team", "down", session).returncode == 1  # down, once


def test_a_base_named_relative_to_head_is_read_in_the_repository(tmp_path, tmux, run):
    repo = Repo(tmp_path / "repo")
    path = team_file(tmp_path, agents=("ahead",), checkins=False)
    edit(path, 'base = "main"', 'base = "HEAD"')
    session = run("orch-team", "up", path).stdout.strip()
    ahead = str(tmp_path / "repo" / "myapp-ahead")
    commit_work(ahead)
    r = run("orch-team", "down", session)
    assert r.returncode == 0
    assert r.stderr == f"orch-team: kept {ahead}: 1 commit not on HEAD\n"
    assert ahead in worktrees(repo)


def test_a_repository_named_by_a_subdirectory_gets_worktrees_beside_it(tmp_path, tmux, run):
    Repo(tmp_path / "repo")
    os.makedirs(tmp_path / "repo" / "main" / "sub")
    path = team_file(tmp_path, agents=("x",), checkins=False)
    edit(path, 'repo = "repo/main"', 'repo = "repo/main/sub"')
    r = run("orch-team", "up", path)
    assert r.returncode == 0, r.stderr
    assert windows(tmux, r.stdout.strip())["x"] == str(tmp_path / "repo" / "myapp-x")


def test_an_error_about_a_hostile_file_name_stays_one_clean_line(tmp_path, run):
    path = tmp_path / "t\n\x1b[31mred.toml"
    path.write_text("project = 1\n")
    r = run("orch-team", "up", str(path))
    assert r.returncode == 65
    assert len(r.stderr.splitlines()) == 1 and "\x1b" not in r.stderr
