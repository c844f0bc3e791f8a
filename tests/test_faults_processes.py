"""The fault suite, part 2: `cpm-nb prepare` killed with SIGKILL at different moments, and
two processes preparing the same cache at once (real processes; the rest of the suite is
in tests/faults/).

A slowed-down copy of the command (``SLOW`` seconds per image) makes the moments wide
enough to hit: the test watches the file system and kills the process when the moment
has come.  The previous good files must be byte-identical afterwards, and a rerun must
complete and give the same bytes as the first run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fault_kit import REPO, good_images, leftovers, make_mpii, run, snapshot

from cpm_nb.data import shards

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and flock")

DRIVER = """\
import os, sys, time
from cpm_nb.cli import app as cli
from cpm_nb.data import shards
from cpm_nb.data import synthetic

slow = float(os.environ.get("SLOW", "0"))
render, crop = synthetic._generate_one, shards._process_image
synthetic._generate_one = lambda job: (time.sleep(slow), render(job))[1]
shards._process_image = lambda *a: (time.sleep(slow), crop(*a))[1]
sys.exit(cli.main(sys.argv[1:]))
"""


def _env(data_root, slow: float) -> dict:
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "CPM_NB_DATA": str(data_root), "CPM_NB_PROFILE": "fast",
            "SLOW": str(slow), "PYTHONPATH": path, "TF_CPP_MIN_LOG_LEVEL": "3"}


def _start(tmp_path, argv, data_root, slow):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    return subprocess.Popen([sys.executable, str(driver), *map(str, argv)],
                            env=_env(data_root, slow), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _happened(moment) -> bool:
    """``moment()``, where a folder vanishing under the scan (the writer swapped it in
    meanwhile) counts as 'not yet'."""
    try:
        return moment()
    except FileNotFoundError:
        return False


def _kill_when(proc, moment, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not _happened(moment):
        if proc.poll() is not None:
            pytest.fail(f"the command ended before the moment: {proc.communicate()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the moment never came")
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL


def _rendering(root):
    """Some images of a new rendering are written (in the staging folder)."""
    return lambda: any(len(list(s.glob("images/train/*.jpg"))) >= 3
                       for s in root.rglob(".staging.*.tmp"))


def _writing_shards(root):
    """A split's new shards are being written (temporary names)."""
    return lambda: any(root.rglob(".train-*.tfrecord.*.tmp"))


@pytest.mark.parametrize("moment", ["rendering", "writing shards"])
def test_sigkill_during_prepare_synthetic_keeps_the_old_set(synthetic_master, tmp_path,
                                                            monkeypatch, capsys, moment):
    root = tmp_path / "data"
    shutil.copytree(synthetic_master, root)
    before = snapshot(root)
    proc = _start(tmp_path, ["prepare", "synthetic", "--force", "--quiet"], root,
                  slow=0.02 if moment == "rendering" else 0.05)
    _kill_when(proc, (_rendering if moment == "rendering" else _writing_shards)(root))
    after = snapshot(root)
    kept = before
    if moment == "writing shards":
        # the re-rendered set was already swapped in: the same images, but JSON files with
        # new timings; every TFRecord file must be as it was
        kept = {k: v for k, v in before.items() if k.endswith(".jpg") or "tfrecords-" in k}
    assert {k: after.get(k) for k in kept} == kept  # every good file as it was
    new = [Path(k).relative_to(root).parts for k in after.keys() - before.keys()]
    assert all(any(p.startswith(".") for p in parts) for parts in new)  # only hidden temps
    # a rerun completes, cleans up, and gives the same bytes
    monkeypatch.setenv("CPM_NB_DATA", str(root))
    code, _, err = run(["prepare", "synthetic", "--force", "--quiet"], capsys)
    assert code == 0, err
    rerun = snapshot(root)
    pixels = (".jpg", ".tfrecord")
    assert {k: v for k, v in rerun.items() if k.endswith(pixels)} == \
        {k: v for k, v in before.items() if k.endswith(pixels)}
    assert not leftovers(root)


def test_sigkill_during_prepare_mpii_keeps_the_old_shards(tmp_path, capsys):
    argv = make_mpii(tmp_path, good_images(4))
    code, _, err = run(argv, capsys)
    assert code == 0, err
    out = tmp_path / "root" / "tfrecords-32"
    before = snapshot(out)
    proc = _start(tmp_path, argv, tmp_path / "unused", slow=0.5)
    _kill_when(proc, _writing_shards(out))
    after = snapshot(out)
    assert {k: after.get(k) for k in before} == before
    code, _, err = run(argv, capsys)  # the rerun completes: the same shards and meta again
    assert code == 0, err
    assert snapshot(out) == before and not leftovers(out)


def test_two_processes_preparing_the_same_set_at_once(tmp_path):
    root = tmp_path / "data"
    procs = [_start(tmp_path, ["prepare", "synthetic", "--quiet", "--json"], root, slow=0.005)
             for _ in range(2)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    assert sorted(r["written"] for r in results) == [False, True]  # made once, then reused
    assert results[0]["splits"] == results[1]["splits"]
    tfr = results[0]["out"]
    for split in ("train", "val"):
        shards.check_shards(tfr, split, deep=True)
    assert not leftovers(root)
