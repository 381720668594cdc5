"""One invocation per output directory: a second is refused at once, naming the holder; a lock left
by a killed process does not block."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from paric.stages.lock import OutputDirInUse, OutputLock

REPO = Path(__file__).resolve().parents[1]


def test_second_holder_is_refused_naming_the_first(tmp_path):
    with OutputLock(tmp_path / "out"):
        with pytest.raises(OutputDirInUse, match=rf"{tmp_path / 'out'} is in use by another paric run \(pid {os.getpid()}"):
            OutputLock(tmp_path / "out").acquire()
    with OutputLock(tmp_path / "out"):  # released on exit
        pass


def test_lock_of_a_killed_process_does_not_block(tmp_path):
    code = ("import sys, time; from pathlib import Path; from paric.stages.lock import OutputLock; "
            f"OutputLock(Path({str(tmp_path)!r})).acquire(); print('held', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert proc.stdout.readline().strip() == "held"
    with pytest.raises(OutputDirInUse):
        OutputLock(tmp_path).acquire()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with OutputLock(tmp_path):  # the stale file is still there; its lock died with its process
        assert (tmp_path / ".paric.lock").is_file()


def test_entry_point_refuses_a_held_output_dir_before_any_stage(tmp_path, capsys):
    """The precompute command's ``main`` (what ``pipelines/precompute.py`` runs), in-process: the lock is
    per open file description, so this process's own hold refuses it as another process's would."""
    from paric.commands.precompute import main

    out = tmp_path / "out"
    with OutputLock(out):
        with pytest.raises(SystemExit) as refused:
            main(["--quick", "--no-progress", f"run.output_dir={out}"])
    assert refused.value.code == 3 and "is in use by another paric run" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [".paric.lock"]  # nothing computed


def test_failed_invocation_is_recorded_but_leaves_the_resolved_config_alone(tmp_path):
    from paric.commands.precompute import main

    out = tmp_path / "out"
    out.mkdir()
    (out / "config.resolved.yaml").write_text("the config of the last run that finished\n")
    with pytest.raises(Exception, match="dataset directory not found"):
        main(["--quick", "--no-progress", f"run.output_dir={out}", "data.format=waterbirds",
              f"data.root={tmp_path / 'missing'}"])
    assert (out / "config.resolved.yaml").read_text() == "the config of the last run that finished\n"
    (record,) = (out / "invocations").glob("*.yaml")
    assert "format: waterbirds" in record.read_text()
