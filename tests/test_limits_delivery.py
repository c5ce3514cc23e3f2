"""Usage limits end to end: a limited window holds its account, everyone resumes after the reset."""

import json
import os

from conftest import wait_until
from orchsched import add as add_at
from orchsched import at, run_pass, show

T0 = 1795636800.0   # 2026-11-25T20:00:00Z; TZ is UTC in tests
MIN = 60.0
DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "usage-limit")
PROMPT = "● Done.\n\n╭────────────╮\n│ >          │\n╰────────────╯\n"
LIMIT = ("● Working on it.\n\n  ⎿  You've hit your limit · resets 9pm (UTC)\n\n"
         "╭────────────╮\n│ >          │\n╰────────────╯\n")
NO_RESET = "● Working on it.\n\n  ⎿  Claude usage limit reached.\n\n> \n"






def add(run, *args, t=T0):
    return add_at(run, *args, t=t)


def limits_json(run, t):
    r = run("orch-sched", "limits", "--json", env=at(t))
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


class Screen:
    """A screen file shown by a stand-in agent; set() waits until tmux shows it."""

    def __init__(self, tmux, tmp_path, name, text):
        self.tmux, self.path = tmux, tmp_path / f"{name}.screen"
        self.write(text)

    def write(self, text):
        # Replaced whole, never seen half-written by the agent that shows it.
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.path)

    def set(self, agent, text):
        self.write(text)
        wait_shown(self.tmux, agent, text)


def wait_shown(tmux, agent, text):
    """Wait until the pane shows exactly TEXT (whitespace aside): the agent has redrawn."""
    words = text.split()
    wait_until(lambda: tmux("capture-pane", "-p", "-t", agent.pane).split() == words,
               what="the agent to show its screen")


def sample(name):
    """The screen of a sample in tests/data/usage-limit (the part after its header)."""
    with open(os.path.join(DATA, name), encoding="utf-8") as f:
        return f.read().split("---\n", 1)[1]


def agent_with_screen(tmux, tmp_path, session, text):
    screen = Screen(tmux, tmp_path, session, text)
    agent = tmux.agent(session, "w", screen=str(screen.path))
    agent.pane = tmux("list-panes", "-t", f"={session}:=w", "-F", "#{pane_id}").strip()
    wait_shown(tmux, agent, text)
    return agent, screen


def test_limit_holds_the_account_and_everyone_resumes_once(tmux, run, tmp_path):
    limited, limited_screen = agent_with_screen(tmux, tmp_path, "alpha", LIMIT)
    other, _ = agent_with_screen(tmux, tmp_path, "beta", PROMPT)
    held = add(run, "--account", "team", limited.target, "check alpha")
    later = add(run, "--account", "team", "--in", "1m", other.target, "check beta")
    elsewhere = add(run, "--account", "solo", "--in", "1m", other.target, "other account")

    run_pass(run, T0)
    t = show(run, held)
    assert t["status"] == "pending" and t["attempts"] == 0
    assert t["log"][-1]["outcome"] == "held" and "usage limit" in t["log"][-1]["detail"]
    [acct] = limits_json(run, T0)
    assert (acct["account"], acct["state"], acct["until"]) == (
        "team", "suspended", "2026-11-25T21:02:00Z")
    assert acct["windows"] == [limited.target] and acct["reset"] == "2026-11-25T21:00:00Z"

    run_pass(run, T0 + 5 * MIN)       # beta's check-in is due, but its account is held
    assert other.wait_received(b"other account\r") == b"other account\r"
    assert show(run, later)["status"] == "pending"
    r = run("orch-sched", "status", "--json", env=at(T0 + 50 * MIN))
    assert r.returncode == 1                      # pending work, no daemon
    assert json.loads(r.stdout)["overdue"] == 0   # but held, not overdue
    assert limited.received() == b""
    assert show(run, elsewhere)["status"] == "done"

    limited_screen.set(limited, PROMPT)
    run_pass(run, T0 + 63 * MIN)      # after the reset and its margin
    note = b"Usage limit has reset. Please continue where you left off.\r"
    got = limited.wait_received(note + b"check alpha\r")
    assert got == note + b"check alpha\r"   # the resume message first, then what was held
    assert other.wait_received(b"other account\rcheck beta\r") == b"other account\rcheck beta\r"
    assert show(run, held)["status"] == "done" and show(run, later)["status"] == "done"
    assert limits_json(run, T0 + 63 * MIN) == []

    run_pass(run, T0 + 70 * MIN)
    assert limited.received() == got and b"Usage" not in other.received()


def test_a_notice_still_there_after_the_reset_suspends_again_with_backoff(tmux, run, tmp_path):
    agent, _ = agent_with_screen(tmux, tmp_path, "stuck", NO_RESET)
    task_id = add(run, agent.target, "are you there")
    run_pass(run, T0)
    [acct] = limits_json(run, T0)
    assert acct["until"] == "2026-11-25T20:05:00Z"    # no reset on screen: 5 min
    run_pass(run, T0 + 6 * MIN)
    [acct] = limits_json(run, T0 + 6 * MIN)
    assert acct["until"] == "2026-11-25T20:16:00Z"    # still limited: 10 min
    run_pass(run, T0 + 17 * MIN)
    [acct] = limits_json(run, T0 + 17 * MIN)
    assert acct["until"] == "2026-11-25T20:37:00Z"    # then 20
    assert agent.received() == b""
    t = show(run, task_id)
    assert t["status"] == "pending" and t["attempts"] == 0


def test_the_rate_limit_menu_gets_one_escape_and_no_text(tmux, run, tmp_path):
    menu = sample("v2-extra-usage-menu.txt")
    agent, _ = agent_with_screen(tmux, tmp_path, "menu", menu)
    task_id = add(run, agent.target, "1")
    run_pass(run, T0)
    assert agent.wait_received(b"\x1b") == b"\x1b"
    run_pass(run, T0 + MIN)
    assert agent.received() == b"\x1b"
    [acct] = limits_json(run, T0)
    assert acct["kind"] == "extra-usage"
    assert show(run, task_id)["status"] == "pending"


def test_limit_text_quoted_in_scrollback_does_not_hold(tmux, run, tmp_path):
    screen = sample("neg-quoted-in-scrollback.txt")
    agent, _ = agent_with_screen(tmux, tmp_path, "quoted", screen)
    task_id = add(run, agent.target, "carry on")
    run_pass(run, T0)
    assert agent.wait_received(b"carry on\r") == b"carry on\r"
    assert show(run, task_id)["status"] == "done" and limits_json(run, T0) == []


def test_transient_rate_limit_holds_briefly_without_suspending(tmux, run, tmp_path):
    screen = sample("neg-api-429.txt")
    agent, agent_screen = agent_with_screen(tmux, tmp_path, "busy", screen)
    task_id = add(run, agent.target, "after the retry")
    run_pass(run, T0)
    t = show(run, task_id)
    assert t["status"] == "pending" and t["attempts"] == 0
    assert t["not_before"] == "2026-11-25T20:00:30Z" and limits_json(run, T0) == []
    agent_screen.set(agent, PROMPT)
    run_pass(run, T0 + 31)
    assert agent.wait_received(b"after the retry\r") == b"after the retry\r"


def test_a_held_task_is_never_skipped_by_its_catch_up_policy(tmux, run, tmp_path):
    agent, screen = agent_with_screen(tmux, tmp_path, "skip", LIMIT)
    task_id = add(run, "--catch-up", "skip", agent.target, "held, not missed")
    run_pass(run, T0)
    screen.set(agent, PROMPT)
    run_pass(run, T0 + 3 * 60 * MIN)   # hours late, far past the grace
    expected = b"Usage limit has reset. Please continue where you left off.\rheld, not missed\r"
    assert agent.wait_received(expected) == expected
    assert show(run, task_id)["status"] == "done"


def test_limits_set_and_clear_by_hand(tmux, run, tmp_path):
    agent, _ = agent_with_screen(tmux, tmp_path, "hand", PROMPT)
    task_id = add(run, "--account", "acct", agent.target, "wait for it")
    r = run("orch-sched", "limits", "set", "acct", "--until", "2026-11-25T22:00:00Z",
            env=at(T0))
    assert r.returncode == 0 and r.stdout == ""
    run_pass(run, T0 + MIN)
    assert agent.received() == b"" and show(run, task_id)["log"] == []
    r = run("orch-sched", "limits", "--porcelain", env=at(T0 + MIN))
    assert r.returncode == 0
    assert r.stdout.split("\t")[:4] == ["acct", "suspended", "2026-11-25T22:00:00Z", "7140"]
    assert run("orch-sched", "limits", "clear", "acct", env=at(T0 + MIN)).returncode == 0
    assert run("orch-sched", "limits", "clear", "acct", env=at(T0 + MIN)).returncode == 1
    run_pass(run, T0 + 2 * MIN)
    assert agent.wait_received(b"wait for it\r") == b"wait for it\r"


def test_check_reports_what_the_detector_sees(tmux, run, tmp_path):
    agent, _ = agent_with_screen(tmux, tmp_path, "chk", LIMIT)
    r = run("orch-sched", "check", "--json", agent.target, env=at(T0))
    assert r.returncode == 1
    seen = json.loads(r.stdout)
    assert (seen["state"], seen["kind"], seen["reset"], seen["menu"]) == (
        "limited", "unknown", "2026-11-25T21:00:00Z", False)
    r = run("orch-sched", "check", "--json", "-", stdin=PROMPT, env=at(T0))
    # An input box with nothing in it, as Claude Code 1.x drew it.
    assert r.returncode == 0 and json.loads(r.stdout)["state"] == "ready"
    r = run("orch-sched", "check", "chk:nosuch")
    assert r.returncode == 69 and "error" in r.stderr


def test_todays_wordings_hold_the_account_until_their_reset(tmux, run, tmp_path):
    # 20:00 UTC is 15:00 in New York: "resets 10pm" there is 03:00 UTC; hold until 2 min later.
    credits, _ = agent_with_screen(tmux, tmp_path, "cred",
                                   sample("v3-out-of-credits-newyork.txt"))
    warned, _ = agent_with_screen(tmux, tmp_path, "warn",
                                  sample("v3-warn-lead-next-line-tbilisi.txt"))
    add(run, "--account", "a", credits.target, "for credits")
    add(run, "--account", "b", warned.target, "for tbilisi")
    run_pass(run, T0)
    until = {a["account"]: (a["until"], a["kind"]) for a in limits_json(run, T0)}
    assert until == {"a": ("2026-11-26T03:02:00Z", "credits"),
                     "b": ("2026-11-26T11:02:00Z", "five-hour")}
    assert credits.received() == b"" and warned.received() == b""


def test_a_notice_without_a_reset_holds_with_backoff_and_needs_attention(tmux, run, tmp_path):
    org, _ = agent_with_screen(tmux, tmp_path, "org", sample("v3-org-out-of-usage.txt"))
    task_id = add(run, "--account", "acme", org.target, "are you there?")
    run_pass(run, T0)
    [account] = limits_json(run, T0)
    assert (account["account"], account["kind"], account["reset"]) == ("acme", "org", None)
    assert account["until"] == "2026-11-25T20:05:00Z"      # 5 minutes, doubling after
    assert show(run, task_id)["status"] == "pending" and org.received() == b""
    assert "no reset time shown" in show(run, task_id)["reason"]
    r = run("orch-dash", "--json", env=at(T0 + MIN))
    assert r.returncode == 1
    [reason] = [a for a in json.loads(r.stdout)["attention"] if a["kind"] == "limit"]
    assert reason["text"].startswith("account acme is held at a usage limit with no reset time")


def test_a_resume_note_that_cannot_be_typed_falls_back_to_the_default(tmux, run, tmp_path,
                                                                       monkeypatch):
    limited, screen = agent_with_screen(tmux, tmp_path, "res", LIMIT)
    add(run, "--account", "r", limited.target, "held one")
    run_pass(run, T0)
    screen.set(limited, PROMPT)
    monkeypatch.setenv("ORCH_RESUME_NOTE", "carry on\x1b[Z")    # Shift-Tab, were it typed
    run_pass(run, T0 + 63 * MIN)
    note = b"Usage limit has reset. Please continue where you left off.\r"
    assert limited.wait_received(note + b"held one\r") == note + b"held one\r"
