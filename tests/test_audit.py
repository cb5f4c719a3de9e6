"""The file audit behind the `self-contained` check and the harness's measurement process: a restore
may read the artifact, code and files older than the run, never a file written during the run."""
from __future__ import annotations

import os
import time

import pytest
import torch

from slimbench.suite.measure.audit import FileAudit, NotSelfContained


def test_a_file_written_just_after_the_run_began_is_a_stash(tmp_path):
    """Written within milliseconds of the start: file times are coarser than time.time(), and an exact
    comparison let this through (the stash plugin passed the harness once in CI)."""
    since = time.time()
    stash = tmp_path / "elsewhere" / "weights.pt"
    stash.parent.mkdir()
    torch.save({"w": torch.ones(3)}, stash)
    with pytest.raises(NotSelfContained, match="weights.pt"):
        with FileAudit(tmp_path / "artifact", since):
            torch.load(stash)
    with pytest.raises(NotSelfContained):
        with FileAudit(tmp_path / "artifact", since):
            os.close(os.open(stash, os.O_RDONLY))


def test_the_artifact_old_files_code_and_writes_pass(tmp_path):
    old = tmp_path / "old.bin"
    old.write_bytes(b"x")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    (tmp_path / "artifact").mkdir()
    inside = tmp_path / "artifact" / "model.json"
    inside.write_text("{}")
    code = tmp_path / "helper.py"
    code.write_text("")
    since = time.time()
    with FileAudit(tmp_path / "artifact", since) as audit:
        old.read_bytes()
        inside.read_text()
        code.read_text()
        (tmp_path / "new-output.txt").write_text("written, never read")
    assert audit.stashes == []
