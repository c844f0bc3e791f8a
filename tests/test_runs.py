"""Tests of run folders: checkpoints by variable name, written atomically, damaged ones refused
in one line, resuming only the same configuration, one process per folder."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cpm_nb.core.config import resolve_profile
from cpm_nb.training import config as TC
from cpm_nb.training import loop as T
from cpm_nb.training import runs

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "CPM_NB_STATIC": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}



def weights_of(model):
    return [np.asarray(w) for w in model.get_weights()]


def test_checkpoint_holds_every_variable_by_name(fast_run):
    _, out, _ = fast_run
    arrays, state = runs.read_checkpoint(out / "checkpoint.npz")
    assert "model/conv1_1/kernel" in arrays and "model/Mconv7_stage2/bias" in arrays
    assert "optimizer/adam/iteration" in arrays
    assert int(arrays["optimizer/adam/iteration"]) == 20
    assert state["step"] == 20 and state["history"]["step"][-1] == 20


def test_half_written_checkpoint_never_replaces_a_good_one(fast_run, tmp_path, monkeypatch):
    cfg, _, result = fast_run
    path = tmp_path / "checkpoint.npz"
    model = result.model
    runs.save_checkpoint(path, model, model.optimizer, {"step": 5})
    good = path.read_bytes()

    def crash(src, dst):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(runs.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        runs.save_checkpoint(path, model, model.optimizer, {"step": 10})
    assert path.read_bytes() == good and runs.read_checkpoint(path)[1] == {"step": 5}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.npz"]


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage"])
def test_damaged_checkpoint_is_a_one_line_error(fast_run, tmp_path, damage):
    _, out, _ = fast_run
    good = (out / "checkpoint.npz").read_bytes()
    bad = {"empty": b"", "truncated": good[: len(good) // 2], "garbage": b"x" * 1000}[damage]
    (tmp_path / "checkpoint.npz").write_bytes(bad)
    with pytest.raises(runs.RunError, match="not a readable checkpoint") as err:
        runs.read_checkpoint(tmp_path / "checkpoint.npz")
    assert "\n" not in str(err.value)


def test_resume_needs_a_checkpoint_and_the_same_configuration(fast_run, tmp_path):
    cfg, _, _ = fast_run
    with pytest.raises(runs.RunError, match="nothing to resume"):
        T.train(cfg, tmp_path, resume=True, progress=False, verbose=False)
    T.train(cfg, tmp_path, progress=False, verbose=False, stop_after=2)
    with pytest.raises(TC.ConfigMismatch, match="another configuration"):
        T.train(cfg.replace(seed=3), tmp_path, progress=False, verbose=False)


def test_a_new_run_keeps_the_previous_model_until_it_is_replaced(fast_run, tmp_path):
    cfg, out, _ = fast_run
    (tmp_path / "model.keras").write_bytes((out / "model.keras").read_bytes())
    before = (tmp_path / "model.keras").read_bytes()
    T.train(cfg, tmp_path, resume=False, progress=False, verbose=False, stop_after=3)
    assert (tmp_path / "model.keras").read_bytes() == before  # still the old model
    T.train(cfg, tmp_path, resume=True, progress=False, verbose=False)
    assert (tmp_path / "model.keras").read_bytes() != before


HOLD_RUN_LOCK = """
import sys
from cpm_nb.training import runs
with runs.run_lock(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.read()
"""


def test_one_process_at_a_time_per_run_folder(tmp_path):
    cfg = TC.train_config(resolve_profile("fast"))
    holder = subprocess.Popen([sys.executable, "-c", HOLD_RUN_LOCK, str(tmp_path)], cwd=REPO,
                              env=ENV, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(runs.RunLocked, match="another process"):
            T.train(cfg, tmp_path, progress=False, verbose=False)
    finally:
        holder.communicate("", timeout=60)
    with runs.run_lock(tmp_path):  # released again
        pass
    assert not (tmp_path / ".lock").exists()  # and no lock file is left behind

