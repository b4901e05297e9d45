"""Status lines of long loops (evaluation, envmap splits): items done and an ETA; lines that rewrite
themselves with ``\\r`` only on a terminal, plain lines (at most one every few seconds) otherwise."""

from __future__ import annotations

import io

import numpy as np
import yaml
from tiny_workspace import run_cli

from pipeline.status import StatusLine


class Clock:
    """A clock the test moves by hand."""

    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_plain_lines_with_the_eta_at_most_every_few_seconds():
    clock, log = Clock(), io.StringIO()
    status = StatusLine("evaluate principled", 10, "samples", log, every=5.0, clock=clock)
    for done in range(11):
        status.update(done, f"key-{done}")
        clock.now += 2.0  # each sample takes 2 s
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    # 0 and 1 (a start is visible at once), then one line per ≥ 5 s, and always the last.
    assert [line.split()[2] for line in lines] == ["0/10", "1/10", "4/10", "7/10", "10/10"]
    assert lines[1] == (
        "evaluate principled: 1/10 samples  2.0 s/sample  elapsed 0:00:02  ETA 0:00:18  key-1"
    )
    assert "ETA 0:00:00" in lines[-1] and "ETA ?" in lines[0]


def test_a_terminal_gets_one_line_that_rewrites_itself():
    clock, screen = Clock(), Terminal()
    status = StatusLine("make-envmap-splits", 3, "envmaps", screen, clock=clock)
    for done, name in ((1, "a-long-envmap-name"), (2, "b"), (3, "c")):
        clock.now += 1.0
        status.update(done, name)
    text = screen.getvalue()
    updates = text.split("\r")[1:]
    assert len(updates) == 3 and text.startswith("\r") and text.count("\n") == 1 and text.endswith("\n")
    assert len(updates[1]) >= len(updates[0])  # a shorter line blanks what the longer one left
    assert updates[2].startswith("make-envmap-splits: 3/3 envmaps")


def test_make_envmap_splits_reports_progress_in_plain_lines_when_not_on_a_terminal(
    tmp_path, monkeypatch, capsys
):
    from rendering.hdrio import write_exr

    rng = np.random.default_rng(0)
    for i in range(4):
        write_exr(tmp_path / "users" / f"map{i}.exr", rng.random((8, 16, 3)).astype(np.float32))
    params = {
        "profile": "tiny",
        "profiles": {"tiny": {"refmap_res": 16}},
        "envmaps": {
            "n": 0,
            "envmap_height": 8,
            "user_dir": str(tmp_path / "users"),
            "cache_dir": str(tmp_path / "c"),
        },
        "envmaps_split": {"seed": 0, "proportions": {"train": 0.5, "val": 0.25, "test": 0.25}},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    args = ["make-envmap-splits", "--out", tmp_path / "envmaps", "--params", tmp_path / "params.yaml"]
    code, output = run_cli(args, monkeypatch, capsys)
    assert code == 0, output
    assert "\r" not in output
    assert "make-envmap-splits: 1/4 envmaps" in output and "make-envmap-splits: 4/4 envmaps" in output
    assert "ETA" in output
