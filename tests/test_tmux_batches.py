"""The tmux adapter's batched calls, on more panes than one tmux command line can carry."""

import os
import sys

from conftest import wait_until

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from orch import tmux as orch_tmux  # noqa: E402

N = 120  # enough for several batches of commands


def recorders(tmux, tmp_path, n=N):
    """N panes, each a raw terminal whose input `cat` appends to a file of its own."""
    files = []
    for i in range(n):
        path = tmp_path / f"r{i}"
        tmux._spawn("many", f"w{i}", f"stty raw -echo && exec cat > {path}")
        files.append(path)
    ids = tmux("list-panes", "-s", "-t", "=many", "-F", "#{pane_id}").split()
    wait_until(lambda: all(p.exists() for p in files), what="every recorder")
    wait_until(lambda: tmux("list-panes", "-s", "-t", "=many", "-F",
                            "#{pane_current_command}").split() == ["cat"] * n,
               what="cat in every pane")
    return ids, files


def test_batches_reach_every_pane_exactly_once(tmux, tmp_path):
    ids, files = recorders(tmux, tmp_path)
    panes = [orch_tmux.Pane(i, "", False) for i in ids]
    assert orch_tmux.capture_all(tmux.socket, panes) is True
    assert {p.command for p in panes} == {"cat"} and all(p.screen is not None for p in panes)
    notes = {pane_id: f"note for {pane_id}; -n %1 C-c" for pane_id in ids}
    spool = tmp_path / "spool"
    spool.mkdir()
    assert orch_tmux.paste_all(tmux.socket, notes, str(spool)) == set(ids)
    assert orch_tmux.keys_all(tmux.socket, ids, "Enter") == []
    for pane_id, path in zip(ids, files, strict=True):
        expected = notes[pane_id].encode() + b"\r"
        wait_until(lambda p=path, e=expected: p.read_bytes() == e, what=f"{pane_id}'s note")
    # Once more, now that every pane has had time: nothing arrived twice.
    assert all(p.read_bytes() == notes[i].encode() + b"\r" for i, p in zip(ids, files, strict=True))
    assert list(spool.iterdir()) == []   # the note files are gone
    assert tmux("list-buffers") == ""     # and so are the buffers


def test_a_pane_gone_mid_batch_misses_only_its_key(tmux, tmp_path):
    ids, files = recorders(tmux, tmp_path, 60)
    gone = ids[30]
    tmux("kill-pane", "-t", gone)
    assert orch_tmux.keys_all(tmux.socket, ids, "Enter") == [gone]
    for pane_id, path in zip(ids, files, strict=True):
        if pane_id != gone:
            wait_until(lambda p=path: p.read_bytes() == b"\r", what=f"{pane_id}'s Enter")
    panes = [orch_tmux.Pane(i, "", False) for i in ids]
    assert orch_tmux.capture_all(tmux.socket, panes) is False   # callers then look one by one
    notes = {pane_id: "x" for pane_id in ids}
    typed = orch_tmux.paste_all(tmux.socket, notes, str(tmp_path))
    assert typed == set(ids) - {gone}
    assert tmux("list-buffers") == ""
