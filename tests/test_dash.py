"""orch-dash: every view of real state built with the other tools (check-ins, a suspended
account, a held lock, an orchestration in a real tmux server, a synced repository)."""

import json
import os
import re
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pexpect
import pytest
from conftest import wait_until
from gitrepo import Repo, write

ESC = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
SECTIONS = {"checkins", "limits", "orchestrations", "locks", "sync"}


def ok(res, *codes):
    assert res.returncode in (codes or (0,)), (res.returncode, res.stdout, res.stderr)
    return res


def iso(offset):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + offset))


def hold_lock(run, name, note):
    """A background `orch-lock run` holding NAME; returns its Popen once it holds."""
    p = subprocess.Popen(["orch-lock", "run", "-m", note, name, "sleep", "300"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    wait_until(lambda: run("orch-lock", "who", name).returncode == 0 or p.poll() is not None,
               what=f"lock {name} held")
    assert p.poll() is None, p.communicate()
    return p


def release(p):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)  # orch-lock passes it on to sleep and lets go
    p.wait(timeout=30)


@pytest.fixture
def state(run, tmux, tmp_path):
    """Everything orch-dash shows, made by the tools themselves.  Yields a dict of names."""
    # A check-in that failed: no such window, no retries, one pass.
    ok(run("orch-sched", "add", "--retries=0", "nosuch:0", "never", "typed"))
    ok(run("orch-sched", "run"))
    # Check-ins to come, one overdue (its due time passed more than its grace ago).
    ok(run("orch-sched", "add", "--in", "30m", "proj:0", "Check", "the", "build"))
    ok(run("orch-sched", "add", "--in", "2h", "proj:0", "Second", "one"))
    ok(run("orch-sched", "add", "--at", iso(-3600), "proj:2", "Overdue", "report"))
    ok(run("orch-sched", "add", "--in", "1h", "--account=work", "team:1", "Held", "one"))
    # A suspended account.
    ok(run("orch-sched", "limits", "set", "work", f"--until={iso(7200)}"))
    # An orchestration whose tmux session runs, and one whose session never started.
    session = ok(run("orch-lock", "new", "proj")).stdout.split("\t")[0]
    tmux.shell(session)
    ok(run("orch-lock", "new", "other"))
    # A held lock.
    holder = hold_lock(run, "proj.build", "nightly build")
    # A repository: a1 heads for a conflict with the base, a2 has uncommitted work.
    repo = Repo(tmp_path / "r", branches=("a1", "a2"), files={"shared": "1\n2\n3\n"})
    repo.commit("a1", {"shared": "a1\n2\n3\n"})
    repo.commit("main", {"shared": "main\n2\n3\n"})
    write(os.path.join(repo.path("a2"), "wip"), "not committed\n")
    ok(run("orch-sync", "install", f"--repo={repo.main}"))
    ok(run("orch-sync", "now", f"--repo={repo.main}"), 1)
    ok(run("orch-sync", "map", repo.path("a1"), "proj:1"))
    yield {"session": session, "repo": repo, "holder": holder}
    release(holder)


def gather_json(run, *args, code=1):
    res = ok(run("orch-dash", "--json", *args), code)
    assert res.stderr == ""
    return json.loads(res.stdout)


# --- the views ---------------------------------------------------------------------------

def test_every_view_shows_the_state_and_needs_attention(run, state, tmp_path):
    # No git from the default view: a git that records being called is first on PATH.
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "git").write_text(f"#!/bin/sh\ntouch {tmp_path}/git-ran\nexit 1\n")
    (shim / "git").chmod(0o755)
    env = {"PATH": f"{shim}{os.pathsep}{os.environ['PATH']}"}

    res = ok(run("orch-dash", env=env), 1)
    assert res.stderr == ""
    out = res.stdout
    assert not (tmp_path / "git-ran").exists()
    assert "\x1b[" not in out  # not a terminal: no colour
    lines = out.splitlines()
    assert all(len(line) <= 80 for line in lines), [line for line in lines if len(line) > 80]
    assert lines[0].startswith("orch-dash  ")
    assert lines[1] == "needs attention: 1 failed, 1 late, no scheduler, 1 in conflict"
    text = "\n".join(lines)
    for heading in ("Check-ins: 4 pending, scheduler not running; 1 late, 1 failed",
                    "Limits: 1 account suspended", "Orchestrations: 1 active", "Locks: 1 held",
                    "Sync: 1 repository, 3 worktrees, 1 in conflict; daemon not running"):
        assert heading in lines, heading
    row = {line.split()[0] + " " + line.split()[1]: line for line in lines
           if re.match(r"  (failed|late|next|held) ", line)}
    assert "nosuch:0" in row["failed nosuch:0"] and "gave up after 1 attempts" in text
    assert "Overdue report" in row["late proj:2"]
    assert "Check the build" in row["next proj:0"] and " 2 " in row["next proj:0"]
    assert "Held one" in row["held team:1"]
    assert re.search(r"^  work +(?:\d\d-\d\d )?\d\d:\d\d +1h5\dm ", text, re.M)  # its countdown
    assert re.search(rf"^  {state['session']} +<1m ", text, re.M)
    assert "other-" not in text  # never started: not active
    assert re.search(r"^  proj\.build +\d+ +<1m +nightly build +sleep 300$", text, re.M)
    assert re.search(r"^    a1 +a1 +\+1 -1 +- +conflict: shared$", text, re.M)
    assert re.search(r"^    a2 +a2 +\+0 -1 +dirty +- +skipped: uncommitted changes$", text,
                     re.M)
    assert "orch-sched.daemon" not in text

    # Porcelain: the same, tab-separated, the section first.
    res = ok(run("orch-dash", "--porcelain"), 1)
    recs = [line.split("\t") for line in res.stdout.splitlines()]
    assert {r[0] for r in recs} == SECTIONS | {"attention"}
    assert sorted(r[1] for r in recs if r[0] == "attention") == [
        "conflict", "failed", "late", "unscheduled"]
    assert ["checkins", "daemon", "stopped", "", "4", ""] in recs
    nxt = [r for r in recs if r[:2] == ["checkins", "next"]]
    assert [(r[3], r[6], r[7], r[8]) for r in nxt] == [
        ("proj:0", "0", "0", "2"), ("proj:2", "1", "0", "1"), ("team:1", "0", "1", "1")]
    assert [r[3] for r in recs if r[:2] == ["checkins", "late"]] == ["proj:2"]
    assert [r[3] for r in recs if r[:2] == ["checkins", "failed"]] == ["nosuch:0"]
    lim = [r for r in recs if r[0] == "limits"]
    assert len(lim) == 1 and lim[0][1:3] == ["suspended", "work"] and 7000 < int(lim[0][4])
    assert [r[2] for r in recs if r[0] == "orchestrations"] == [state["session"]]
    lock = [r for r in recs if r[0] == "locks"]
    assert [(r[1], r[2], r[6], r[7]) for r in lock] == [
        ("held", "proj.build", "nightly build", "sleep 300")]
    assert lock[0][3] == str(state["holder"].pid)
    trees = {os.path.basename(r[3]): r for r in recs if r[:2] == ["sync", "worktree"]}
    assert trees["a1"][8:] == ["conflict", "", "shared"]
    assert trees["a2"][7:9] == ["1", "skipped"]
    assert all(len(r) == 11 for r in nxt) and all(len(r) == 11 for r in trees.values())

    # JSON: one versioned object with the same sections.
    obj = gather_json(run)
    assert obj["version"] == 1
    assert set(obj) == {"version", "generated", "project", "attention", "errors"} | SECTIONS
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", obj["generated"])
    c = obj["checkins"]
    assert set(c) == {"pending", "daemon", "next", "late", "failed", "waiting", "outcomes"}
    assert c["pending"] == 4 and c["daemon"] == {"running": False, "pid": None,
                                                 "last_pass": None}
    assert {"id", "target", "due", "status", "late", "held", "count", "note"} <= set(c["next"][0])
    assert c["late"][0]["target"] == "proj:2" and 3500 < c["late"][0]["late_s"] < 4000
    assert c["failed"][0]["target"] == "nosuch:0"
    assert obj["limits"][0]["account"] == "work" and obj["limits"][0]["until"].endswith("Z")
    assert [o["session"] for o in obj["orchestrations"]] == [state["session"]]
    assert obj["locks"][0]["name"] == "proj.build" and obj["locks"][0]["age_s"] >= 0
    repo = obj["sync"]["repos"][0]
    assert repo["repo"] == state["repo"].main and repo["hooks"] is True
    assert {w["state"] for w in repo["worktrees"]} == {"conflict", "skipped", "synced"}
    assert [(p["a"], p["b"]) for p in repo["conflicts"]] == [("a1", "main")]
    assert obj["errors"] == []


def test_exit_status_is_0_when_nothing_needs_attention(run):
    res = ok(run("orch-dash"))
    assert res.stdout.splitlines()[1] == "all well"
    assert gather_json(run, code=0)["attention"] == []
    # A suspended account is normal; pending check-ins need a scheduler.
    ok(run("orch-sched", "limits", "set", "work", f"--until={iso(3600)}"))
    ok(run("orch-dash"))
    ok(run("orch-sched", "add", "--in", "1h", "p:0", "later"))
    res = ok(run("orch-dash"), 1)
    assert res.stdout.splitlines()[1] == "needs attention: no scheduler"
    pid = int(ok(run("orch-sched", "daemon", "--detach")).stdout)
    res = ok(run("orch-dash"))
    assert f"scheduler running (pid {pid})" in res.stdout
    assert ok(run("orch-dash", "line", "--ascii")).stdout == "chk1\n"
    # The daemons' own locks are their sections' state, not held locks.
    assert "Locks: none held" in res.stdout


def test_project_filter(run, state):
    obj = gather_json(run, "--project=proj")
    assert obj["project"] == "proj"
    assert sorted(t["target"] for t in obj["checkins"]["next"]) == ["proj:0", "proj:2"]
    assert obj["checkins"]["pending"] == 3 and obj["checkins"]["failed"] == []
    assert obj["limits"] == []  # work's check-ins are team's
    assert [o["session"] for o in obj["orchestrations"]] == [state["session"]]
    assert [h["name"] for h in obj["locks"]] == ["proj.build"]
    # The repository is proj's: one of its worktrees is mapped to a proj window.
    assert len(obj["sync"]["repos"]) == 1
    team = gather_json(run, "--project=Team")
    assert [t["target"] for t in team["checkins"]["next"]] == ["team:1"]
    assert [a["account"] for a in team["limits"]] == ["work"]
    assert team["orchestrations"] == team["locks"] == team["sync"]["repos"] == []
    assert [r["kind"] for r in team["attention"]] == ["unscheduled"]
    for args in (["line", "--ascii", "--project=Team"], ["--project=Team", "line", "--ascii"]):
        assert ok(run("orch-dash", *args), 1).stdout == "chk1 !1\n"
    res = ok(run("orch-dash", "--project=!!"), 65)
    assert res.stdout == "" and "bad project name" in res.stderr


def test_line(run, state):
    res = ok(run("orch-dash", "line"), 1)
    assert res.stdout == "⏰4 ⚠4 🔒1 ⇅1!\n" and res.stderr == ""
    assert ok(run("orch-dash", "line", "--ascii"), 1).stdout == "chk4 !4 lck1 sync:1!\n"
    # The same through docopt (a spelling the fast path leaves to it).
    assert ok(run("orch-dash", "line", "--project", "proj"), 1).stdout == "⏰3 ⚠3 🔒1 ⇅1!\n"
    res = ok(run("orch-dash", "line", "--bogus"), 64)
    assert res.stdout == "" and "Usage:" in res.stderr


def test_without_tmux_orchestrations_are_unknown_and_the_rest_stands(run, tmux):
    session = ok(run("orch-lock", "new", "proj")).stdout.split("\t")[0]
    tmux.shell(session)
    env = {"PATH": os.path.dirname(sys.executable)}  # the venv's scripts, and no tmux
    res = ok(run("orch-dash", env=env))
    assert "Orchestrations: unknown (tmux is not installed" in res.stdout
    assert res.stdout.splitlines()[1] == "all well" and res.stderr == ""
    res = ok(run("orch-dash", "--porcelain", env=env))
    assert res.stdout.startswith("orchestrations\terror\ttmux is not installed")
    obj = json.loads(ok(run("orch-dash", "--json", env=env)).stdout)
    assert obj["errors"] == [{"section": "orchestrations", "text": obj["errors"][0]["text"]}]
    assert obj["orchestrations"] == []
    assert ok(run("orch-dash", "line", env=env)).stdout == "⏰0\n"



def test_bad_values_and_usage(run):
    for args, code, word in ((["--watch", "-n", "0"], 65, "-n"), (["serve", "--port=99999"], 65,
                             "--port"), (["--json", "--porcelain"], 64, "Usage"),
                             (["--frobnicate"], 64, "Usage")):
        res = ok(run("orch-dash", *args), code)
        assert res.stdout == "" and word in res.stderr
    res = ok(run("orch-dash", "--help"))
    assert res.stdout.startswith("orch-dash: one glance")


# --- colour, the terminal, --watch --------------------------------------------------------

CHILDREN = []


@pytest.fixture(autouse=True)
def close_children():
    """Terminal sessions end with their test, even one that failed half-way."""
    yield
    while CHILDREN:
        CHILDREN.pop().close(force=True)


def spawn(command, env=None, rows=40, cols=100):
    full = dict(os.environ, **(env or {}))
    child = pexpect.spawn("sh", ["-c", command], env=full, dimensions=(rows, cols),
                          encoding="utf-8", timeout=20)
    CHILDREN.append(child)
    return child


def test_colour_only_on_a_terminal_and_never_with_no_color(run):
    ok(run("orch-sched", "add", "--in", "1h", "p:0", "later"))
    child = spawn("orch-dash; echo rc=$?")
    child.expect("rc=1")
    assert "\x1b[31mneeds attention: no scheduler\x1b[0m" in child.before
    assert "\x1b[1mCheck-ins: 1 pending" in child.before
    child = spawn("orch-dash; echo rc=$?", env={"NO_COLOR": "1"})
    child.expect("rc=1")
    assert "needs attention" in child.before and "\x1b[" not in child.before


def test_watch_redraws_in_place_and_q_restores_the_terminal(run):
    ok(run("orch-sched", "add", "--in", "1h", "p:0", "first", "note"))
    child = spawn("stty -a | tr ' ' '\\n' | grep -x -e icanon -e echo | tr '\\n' ' '; echo; "
                  "orch-dash --watch -n 0.3; echo rc=$?; "
                  "stty -a | tr ' ' '\\n' | grep -x -e icanon -e echo | tr '\\n' ' '; echo",
                  rows=30, cols=90)
    child.expect("icanon echo \r\n")
    child.expect_exact("\x1b[?1049h\x1b[?25l")  # alternate screen, cursor hidden
    child.expect_exact("\x1b[H")
    child.expect("first note")
    ok(run("orch-sched", "add", "--in", "2h", "q:0", "second", "note"))
    child.expect("second note")  # a later frame, drawn in place
    frame = child.before
    assert "\x1b[H" in frame and "\x1b[2K" in frame and "\x1b[?1049l" not in frame
    lines = [ESC.sub("", line) for line in frame.split("\r\n")]
    assert all(len(line) < 90 for line in lines)
    child.send("q")
    child.expect_exact("\x1b[?25h\x1b[?1049l")  # cursor shown, main screen back
    child.expect("rc=0")
    child.expect("icanon echo \r\n")  # cooked mode and echo again
    child.expect(pexpect.EOF)


def test_watch_ctrl_c_restores_the_terminal(run):
    # The shell traps SIGINT (so it lives on to report), which leaves it at its default in
    # orch-dash; the terminal sends it to both.
    child = spawn("trap : INT; orch-dash --watch -n 5; echo rc=$?; "
                  "stty -a | tr ' ' '\\n' | grep -x -e icanon -e echo | tr '\\n' ' '; echo")
    child.expect("all well")
    child.sendintr()
    child.expect_exact("\x1b[?25h\x1b[?1049l")
    child.expect("rc=130")
    child.expect("icanon echo \r\n")


def test_watch_on_a_pipe_prints_a_snapshot_every_secs(run):
    p = subprocess.Popen(["orch-dash", "--watch", "-n", "0.2"], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        seen = []
        while len(seen) < 3:
            line = p.stdout.readline()
            assert line, p.stderr.read()
            if line.startswith("orch-dash  "):
                seen.append(line)
            assert "\x1b" not in line
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=10)


# --- files ------------------------------------------------------------------------------

def test_output_replaces_the_file_atomically(run, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    target = out / "dash.txt"
    target.write_text("old\n")
    before = os.stat(target).st_ino
    res = ok(run("orch-dash", f"--output={target}"))
    assert res.stdout == ""
    assert target.read_text().splitlines()[1] == "all well"
    assert os.stat(target).st_ino != before  # a new file renamed over the old one
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    ok(run("orch-sched", "add", "--in", "1h", "p:0", "later"))
    ok(run("orch-dash", "--json", f"--output={target}"), 1)
    assert json.loads(target.read_text())["checkins"]["pending"] == 1
    # A reader never sees half a file, however often it is rewritten.
    # Each rewrite must succeed (exit 1: the pending check-in has no scheduler).
    writer = subprocess.Popen(["sh", "-c", f"for i in 1 2 3 4 5 6; do orch-dash --json "
                               f"--output='{target}'; [ $? -eq 1 ] || exit 99; done"],
                              stdin=subprocess.DEVNULL)
    reads = 0
    while writer.poll() is None or reads == 0:
        assert json.loads(target.read_text())["version"] == 1
        reads += 1
    assert writer.wait() == 0
    assert os.listdir(out) == ["dash.txt"]  # no temporary file left behind
    res = ok(run("orch-dash", f"--output={tmp_path}/missing/dash.txt"), 74)
    assert "cannot write" in res.stderr


# --- the web page and the server ------------------------------------------------------------

def chromium():
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.fail("chromium is required for this test: run make deps")
    return path


def browse(tmp_path, url, *args):
    profile = tmp_path / "chromium-profile"
    proc = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu",
                           "--disable-quic", "--no-first-run", "--disable-background-networking",
                           "--disable-component-update", "--disable-sync",
                           f"--user-data-dir={profile}", *args, url],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_html_page_in_headless_chromium(run, state, tmp_path):
    page = tmp_path / "dash.html"
    res = ok(run("orch-dash", f"--html={page}"), 1)
    assert res.stdout == ""
    html = page.read_text()
    assert '<meta http-equiv="refresh"' in html and 'name="viewport"' in html
    assert not re.search(r"""(src|href)=|@import|url\(|<script""", html)  # self-contained
    dom = browse(tmp_path, page.as_uri(), "--dump-dom")
    text = re.sub(r"<[^>]+>", " ", dom)
    text = re.sub(r"\s+", " ", text)
    for words in ("needs attention: 1 failed, 1 late, no scheduler, 1 in conflict",
                  "Check-ins", "Limits", "Orchestrations", "Locks", "Sync",
                  "late proj:2", "Overdue report", "Check the build (+1 more)", "work",
                  state["session"], "proj.build", "nightly build · sleep 300", "conflict a1",
                  "skipped a2", "uncommitted changes"):
        assert words in text, words
    assert 'tr class="bad"' in dom and 'tr class="warn"' in dom
    shot = tmp_path / "shot.png"
    browse(tmp_path, page.as_uri(), f"--screenshot={shot}", "--window-size=412,915")
    with open(shot, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(shot) > 10000


def listening(port):
    """The local addresses listening on PORT, from /proc/net/tcp and tcp6."""
    found = []
    for name in ("tcp", "tcp6"):
        try:
            with open(f"/proc/net/{name}") as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            address, hex_port = fields[1].rsplit(":", 1)
            if int(hex_port, 16) == port and fields[3] == "0A":  # LISTEN
                if name == "tcp":
                    found.append(".".join(str(int(address[i:i + 2], 16))
                                          for i in (6, 4, 2, 0)))
                else:
                    found.append(f"v6:{address}")
    return found


def request(url, method="GET", host=None):
    req = urllib.request.Request(url, method=method, data=b"x" if method == "POST" else None)
    if host:
        req.add_header("Host", host)
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def test_serve_on_loopback_only_and_read_only(run, state, tmp_path):
    p = subprocess.Popen(["orch-dash", "serve", "--port=0"], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = p.stdout.readline().strip()
        m = re.fullmatch(r"http://127\.0\.0\.1:(\d+)/", url)
        assert m, (url, p.stderr.read() if p.poll() is not None else "")
        port = int(m.group(1))
        assert listening(port) == ["127.0.0.1"]
        status, headers, body = request(url)
        assert status == 200 and headers["Content-Type"].startswith("text/html")
        assert b"needs attention" in body and state["session"].encode() in body
        status, headers, body = request(url + "json")
        assert status == 200 and headers["Content-Type"] == "application/json"
        obj = json.loads(body)
        assert obj["version"] == 1 and SECTIONS <= set(obj)
        status, headers, _ = request(url + "json", method="POST")
        assert status == 405 and headers["Allow"] == "GET, HEAD"
        for method in ("PUT", "DELETE"):
            assert request(url, method=method)[0] == 405
        assert request(url + "nothing")[0] == 404
        assert request(url, host="evil.example:80")[0] == 403
        # Fresh on every request.
        ok(run("orch-sched", "add", "--in", "1h", "proj:9", "added", "later"))
        nexts = json.loads(request(url + "json")[2])["checkins"]["next"]
        assert "added later" in [t["note"] for t in nexts]
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=10)
    # Nothing listens once it is gone.
    assert listening(port) == []


class Served:
    """A real `orch-dash serve` on a free port, ended (by pid) afterwards."""

    def __enter__(self):
        self.p = subprocess.Popen(["orch-dash", "serve", "--port=0"], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.url = self.p.stdout.readline().strip()
        self.port = int(self.url.rsplit(":", 1)[1].rstrip("/"))
        return self

    def raw(self, data, read=True):
        with socket.create_connection(("127.0.0.1", self.port), timeout=20) as c:
            c.sendall(data)
            return c.makefile("rb").read() if read else b""

    def threads(self):
        with open(f"/proc/{self.p.pid}/status") as f:
            return int(next(line.split()[1] for line in f if line.startswith("Threads:")))

    def __exit__(self, *exc):
        self.p.send_signal(signal.SIGTERM)
        self.stderr = self.p.communicate(timeout=10)[1]


def test_serve_answers_405_to_every_other_method_and_checks_the_host_strictly(state):
    with Served() as srv:
        for method in ("PROPFIND", "FOO", "get", "OPTIONS"):
            reply = srv.raw(f"{method} / HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
            head = reply.split(b"\r\n\r\n")[0].decode()
            assert head.startswith("HTTP/1.1 405 ") and "\r\nAllow: GET, HEAD" in head, method
        for host, code in (("127.0.0.1", 200), ("localhost:8377", 200), ("[::1]:80", 200),
                           ("127.0.0.1:1@evil.com", 403), ("evil.com", 403),
                           ("localhost.evil.com", 403), ("127.0.0.1:", 403),
                           ("127.0.0.1:\u0663", 403), ("LOCALHOST", 403)):
            reply = srv.raw(f"GET /json HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            assert reply.startswith(f"HTTP/1.1 {code} ".encode()), (host, reply[:40])
        assert srv.raw(b"nonsense\r\n\r\n").startswith(b"HTTP/1.1 400 ")


def test_slow_clients_hold_no_worker_and_are_cut_off(state):
    with Served() as srv:
        slow = []
        for _ in range(50):  # each sends part of a head, then nothing
            c = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
            c.sendall(b"GET / HTTP/1.1\r\nHost: local")
            slow.append(c)
        status, _, body = request(srv.url + "json")
        assert status == 200 and json.loads(body)["version"] == 1
        assert srv.threads() <= 1 + 4  # the selector's thread and the bounded pool
        for c in slow:  # the server ends each after its head timeout
            assert c.recv(4096).startswith(b"HTTP/1.1 408 ")
            c.close()
    assert srv.p.returncode in (-signal.SIGTERM, 0)


def test_clients_that_hang_up_early_leave_no_trace(state):
    with Served() as srv:
        for _ in range(50):
            c = socket.create_connection(("127.0.0.1", srv.port), timeout=20)
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            c.close()  # a reset before the answer is written
        assert request(srv.url)[0] == 200  # still serving
    assert srv.stderr == ""


def test_serve_refuses_a_port_in_use(run):
    p = subprocess.Popen(["orch-dash", "serve", "--port=0"], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        port = p.stdout.readline().strip().rsplit(":", 1)[1].rstrip("/")
        res = ok(run("orch-dash", "serve", f"--port={port}"), 69)
        assert "cannot listen on 127.0.0.1" in res.stderr
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=10)

