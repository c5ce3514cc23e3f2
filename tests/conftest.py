"""Hermetic fixtures: every test gets its own HOME and state directory, no
inherited ORCH_* variables, a fixed git identity, and (when it asks) a private
tmux server on its own socket, killed at the end.  Nothing here touches the
user's tmux server or state directory.
"""

import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
AGENT = os.path.join(HERE, "agent.py")


def wait_until(predicate, timeout=15.0, interval=0.02, what="condition"):
    """Poll PREDICATE until it returns a true value; fail the test after TIMEOUT."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@pytest.fixture(autouse=True)
def hermetic(tmp_path, monkeypatch):
    for name in list(os.environ):
        if name.startswith(("ORCH_", "GIT_", "TMUX")) or name in ("XDG_STATE_HOME", "NO_COLOR"):
            monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    state = tmp_path / "state"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("ORCH_HOME", str(state))
    monkeypatch.setenv("ORCH_ENTER_DELAY", "0.1")
    # No test may reach the user's tmux server: without the tmux fixture, tasks
    # name a server that does not exist.
    monkeypatch.setenv("ORCH_TMUX_SOCKET", str(tmp_path / "no-tmux-server"))
    monkeypatch.setenv("ORCH_NO_AUTOSTART", "1")
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_AUTHOR_NAME", "Test Author")
    monkeypatch.setenv("GIT_AUTHOR_EMAIL", "author@example.com")
    monkeypatch.setenv("GIT_COMMITTER_NAME", "Test Committer")
    monkeypatch.setenv("GIT_COMMITTER_EMAIL", "committer@example.com")
    monkeypatch.setenv("TZ", "UTC")
    # The commands under test are this venv's console scripts.
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    yield state
    stop_daemons(state)
    leaked = wait_for_exit(started_by_test(str(state)))
    for pid in leaked:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not leaked, f"the test left processes running: {leaked}"


def started_by_test(state):
    """Pids of live processes started with this test's ORCH_HOME (ours, and only ours)."""
    mark = f"ORCH_HOME={state}".encode()
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                if mark not in f.read().split(b"\0"):
                    continue
        except OSError:
            continue
        if _running(name):
            pids.append(int(name))
    return pids


def _running(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def wait_for_exit(pids, timeout=10.0):
    """Give processes that are already ending (a killed tmux server's panes) time to go."""
    deadline = time.monotonic() + timeout
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if _running(p)]
        if pids:
            time.sleep(0.05)
    return pids


def stop_daemons(state):
    """End every daemon this test's state directory recorded (ours only: by pid)."""
    holders = state / "holders"
    if not holders.is_dir():
        return
    sys.path.insert(0, os.path.join(HERE, "..", "lib"))
    from orch import locks
    for path in holders.iterdir():
        if path.name.startswith("."):  # a temporary record file, never a holder
            continue
        record = locks.read_holder(path.name)
        if record:
            try:
                os.kill(record["pid"], signal.SIGTERM)
            except ProcessLookupError:
                continue
            deadline = time.monotonic() + 10
            while locks.alive(record["pid"], record["start"]) and time.monotonic() < deadline:
                time.sleep(0.02)


@pytest.fixture
def run(script_runner):
    """run(cmd, *args, stdin=None, env=None) -> result with .returncode .stdout .stderr."""
    def _run(*args, stdin="", env=None, **kw):
        full_env = dict(os.environ)
        full_env.update(env or {})
        if isinstance(stdin, bytes):  # then stdout and stderr are bytes too
            stdin = io.BytesIO(stdin)
            kw["universal_newlines"] = False
        else:  # a test's stdin is empty unless it says otherwise
            stdin = io.StringIO(stdin)
        return script_runner.run(list(args), env=full_env, stdin=stdin, print_result=False, **kw)
    return _run


class Agent:
    def __init__(self, server, target, record):
        self.server, self.target, self.record = server, target, record

    def received(self):
        try:
            with open(self.record, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return b""

    def screen(self):
        return self.server("capture-pane", "-p", "-t", self.target_exact())

    def target_exact(self):
        session, _, window = self.target.partition(":")
        return f"={session}:={window}" if window else f"={session}:"

    def wait_screen(self, text, timeout=15.0):
        """Wait until the pane shows TEXT."""
        return wait_until(lambda: text in self.screen(), timeout, what=f"{text!r} on screen")

    def set_mode(self, mode, shows):
        """Switch a drawn layout to MODE (idle, busy, dialog); wait until it SHOWS that text."""
        with open(self.mode_file + ".tmp", "w") as f:
            f.write(mode)
        os.replace(self.mode_file + ".tmp", self.mode_file)
        self.wait_screen(shows)

    def wait_received(self, expected, timeout=15.0):
        """Wait until the agent has received at least the bytes EXPECTED, then return all."""
        wait_until(lambda: len(self.received()) >= len(expected), timeout,
                   what=f"{self.target} to receive {expected[:60]!r}")
        return self.received()


class Tmux:
    """A private tmux server on its own socket."""

    def __init__(self, socket):
        self.socket = socket
        self.n = 0

    def __call__(self, *args, check=True):
        proc = subprocess.run(["tmux", "-S", self.socket, *args], capture_output=True, text=True)
        if check and proc.returncode != 0:
            raise AssertionError(f"tmux {args}: {proc.stderr}")
        return proc.stdout

    def _spawn(self, session, window, command):
        if subprocess.run(["tmux", "-S", self.socket, "has-session", "-t", f"={session}"],
                          capture_output=True).returncode == 0:
            self("new-window", "-d", "-t", f"={session}:", *(["-n", window] if window else []),
                 command)
        else:
            self("-f", "/dev/null", "new-session", "-d", "-s", session, "-x", "120", "-y", "40",
                 *(["-n", window] if window else []), command)

    def agent(self, session, window=None, bracketed=False, screen=None, target=None,
              layout=None, mode="idle", wrap="{}", cursor=None, options=""):
        """Start a stand-in agent in a new window; wait until it is ready.

        LAYOUT "claude" draws Claude Code's screen, in MODE (agent.set_mode
        changes it), with agent.py's OPTIONS.  WRAP is the pane's command line around the agent's
        ({} stands for it): `script -q -c {} /dev/null`, say.
        """
        self.n += 1
        record = os.path.join(os.path.dirname(self.socket), f"agent{self.n}.rec")
        mode_file = record + ".mode"
        command = f"{sys.executable} {AGENT} {record}"
        if bracketed:
            command += " --bracketed"
        if screen:
            command += f" --screen {screen}"
        if cursor is not None:
            command += f" --cursor {cursor}"
        if layout:
            with open(mode_file, "w") as f:
                f.write(mode)
            command += f" --layout {layout} --mode {mode_file} {options}"
        self._spawn(session, window, wrap.format(command))
        wait_until(lambda: os.path.exists(record), what=f"agent in {session} to start")
        if target is None:
            target = f"{session}:{window}" if window else session
        agent = Agent(self, target, record)
        agent.mode_file = mode_file
        if layout:
            agent.wait_screen("shortcuts" if mode == "idle" else "")
        return agent

    def shell(self, session, window=None):
        self._spawn(session, window, "sh")
        return f"{session}:{window}" if window else session


@pytest.fixture
def tmux(monkeypatch):
    if not shutil.which("tmux"):
        pytest.fail("tmux is required for this test: run make deps")
    # Socket paths are limited to ~100 bytes: keep it short, under /tmp.
    directory = tempfile.mkdtemp(prefix="orcht")
    socket = os.path.join(directory, "s")
    monkeypatch.setenv("ORCH_TMUX_SOCKET", socket)
    server = Tmux(socket)
    yield server
    subprocess.run(["tmux", "-S", socket, "kill-server"], capture_output=True)
    shutil.rmtree(directory, ignore_errors=True)
