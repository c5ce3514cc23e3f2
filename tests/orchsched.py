"""orch-sched as the end-to-end tests drive it: each helper runs one command
through the `run` fixture, asserts its exit status and returns what it printed."""

import json


def at(t):
    """The environment that freezes orch-sched's clock at epoch seconds T."""
    return {"ORCH_NOW": repr(t)}


def epoch(iso):
    from datetime import datetime
    return datetime.fromisoformat(iso).timestamp()


def add(run, *args, t=None, **kw):
    """orch-sched add ARGS (at time T, if given); the new task's id."""
    if t is not None:
        kw["env"] = at(t)
    r = run("orch-sched", "add", *args, **kw)
    assert r.returncode == 0, r.stderr
    return int(r.stdout)


def run_pass(run, t=None, **kw):
    """One `orch-sched run` (at time T, if given): exit 0 and nothing on stdout."""
    if t is not None:
        kw["env"] = at(t)
    r = run("orch-sched", "run", **kw)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""


def show(run, task_id):
    r = run("orch-sched", "show", "--json", str(task_id))
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def log(run, task_id=None):
    r = run("orch-sched", "log", "--json", *([str(task_id)] if task_id else []))
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)
