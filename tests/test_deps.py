"""The README's set-up on a machine that lacks what the tests need: `make deps` names
the one command that installs it, and `make test` stops there with that message.
(The real install is what .ci/run does on a fresh machine; no test installs.)"""

import os
import shutil
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
MISSING = "tmux git groff chromium"


def bare_path(tmp_path):
    """A PATH with only make, sh, id and python3: none of what make deps installs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("make", "sh", "id"):
        found = shutil.which(name)
        assert found, f"{name} is required for this test"
        os.symlink(found, bin_dir / name)
    python = shutil.which("python3", path=os.defpath) or sys.executable
    os.symlink(python, bin_dir / "python3")
    return str(bin_dir)


def clone(tmp_path):
    where = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", ROOT, str(where)], check=True, timeout=60)
    return where


def make(where, path, *args):
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL")}
    env["PATH"] = path
    return subprocess.run(["make", "-s", *args], cwd=where, env=env, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL,
                          executable=shutil.which("make"))


def test_make_deps_dry_run_names_the_one_install_command(tmp_path):
    where, path = clone(tmp_path), bare_path(tmp_path)
    res = make(where, path, "deps", "DRY_RUN=1")
    assert res.returncode != 0
    sudo = "" if os.geteuid() == 0 else "sudo "
    assert res.stdout == f"{sudo}apt-get install -y {MISSING}\n", res.stdout + res.stderr
    # A machine that has everything: nothing to do, nothing said.
    res = make(where, os.environ["PATH"], "deps", "DRY_RUN=1")
    assert res.returncode == 0 and res.stdout == "" and res.stderr == "", res.stderr


def test_make_test_on_a_bare_machine_stops_at_deps_with_its_message(tmp_path):
    where, path = clone(tmp_path), bare_path(tmp_path)
    res = make(where, path, "test")
    assert res.returncode != 0
    assert f"make deps: this machine lacks {MISSING}" in res.stderr, res.stderr
    if os.geteuid() != 0:
        assert f"sudo apt-get install -y {MISSING}" in res.stderr
    else:  # root, but no apt-get on this PATH: nothing was installed
        assert "has no apt-get" in res.stderr
    assert not (where / ".venv").exists()  # it stopped before anything else
