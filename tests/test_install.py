"""make install / uninstall: PREFIX and DESTDIR honoured, tools run from the installed tree."""

import os
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def make(*args):
    return subprocess.run(["make", "-C", ROOT, *args, f"PYTHON={sys.executable}"],
                          capture_output=True, text=True)


def test_install_and_uninstall_under_destdir(tmp_path):
    dest = tmp_path / "dest"
    r = make("install", f"DESTDIR={dest}", "PREFIX=/opt/orch")
    assert r.returncode == 0, r.stderr
    root = dest / "opt" / "orch"
    for tool in ("orch-sched", "schedule_with_note.sh"):
        assert os.access(root / "bin" / tool, os.X_OK)
    assert (root / "share" / "man" / "man1" / "orch-sched.1").exists()
    assert (root / "lib" / "orch" / "orch" / "cmd_sched.py").exists()
    # The installed launcher runs on its own tree, not this checkout's venv.
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "ORCH_HOME": str(tmp_path / "st")}
    # -S: no site-packages at all, so docopt can only come from the installed vendor dir.
    r = subprocess.run([sys.executable, "-S", str(root / "bin" / "orch-sched"), "add", "p:0", "hi"],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0 and r.stdout == "1\n", r.stderr
    r = make("uninstall", f"DESTDIR={dest}", "PREFIX=/opt/orch")
    assert r.returncode == 0, r.stderr
    left = [os.path.join(d, f) for d, _, files in os.walk(dest) for f in files]
    assert left == []
