"""cpm_nb.core.files: the one folder lock (filelock; no lock file left behind, still
exclusive between processes and threads) and the one JSON reader and writer (NaN and
infinities as null; one-line errors naming the file)."""

import json
import math
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from cpm_nb.core import errors, files

REPO = Path(__file__).resolve().parents[1]

INCREMENT = """
import sys
from pathlib import Path
from cpm_nb.core import files
folder = Path(sys.argv[1])
for _ in range(int(sys.argv[2])):
    with files.locked(folder):
        counter = folder / "counter"
        value = int(counter.read_text()) if counter.exists() else 0
        counter.write_text(str(value + 1))  # read-modify-write: lost updates without the lock
"""


def test_the_lock_excludes_processes_and_leaves_no_lock_file(tmp_path):
    """Four processes increment one counter under the lock: none is lost, though every
    release removes the lock file that the others are waiting on."""
    n, each = 4, 40
    procs = [subprocess.Popen([sys.executable, "-c", INCREMENT, str(tmp_path), str(each)],
                              cwd=REPO) for _ in range(n)]
    assert [p.wait(timeout=120) for p in procs] == [0] * n
    assert int((tmp_path / "counter").read_text()) == n * each
    assert sorted(p.name for p in tmp_path.iterdir()) == ["counter"]


def test_a_held_lock_refuses_or_makes_wait_another_thread(tmp_path):
    held, release = threading.Event(), threading.Event()

    def holder():
        with files.locked(tmp_path):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    assert held.wait(10)
    busy = errors.DataError("busy: try later")
    with pytest.raises(errors.DataError, match="busy: try later"):
        with files.locked(tmp_path, busy=busy):
            pass
    threading.Timer(0.3, release.set).start()
    start = time.perf_counter()
    with files.locked(tmp_path):  # waits for the holder
        assert release.is_set() and time.perf_counter() - start > 0.2
    thread.join(10)
    assert not (tmp_path / files.LOCK_FILE).exists()


def test_reentrant_holds_keep_the_lock_file_until_the_outermost_ends(tmp_path):
    with files.locked(tmp_path):
        with files.locked(tmp_path):
            pass
        assert (tmp_path / files.LOCK_FILE).exists()  # still held by the outer block
    assert not (tmp_path / files.LOCK_FILE).exists()


def test_json_writes_nan_and_infinities_as_null(tmp_path):
    data = {"a": math.nan, "b": [1.0, math.inf, -math.inf], "c": np.float32(0.5),
            "d": np.array([[1, 2], [3, 4]]), "e": (np.nan, "x"), "f": None, "g": True}
    path = tmp_path / "out.json"
    files.atomic_write_json(path, data)
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": None, "b": [1.0, None, None], "c": 0.5,
                                "d": [[1, 2], [3, 4]], "e": [None, "x"], "f": None, "g": True}
    assert files.read_json(path) == json.loads(text)
    assert files.json_text({"k": [1, 2]}, indent=None) == '{"k":[1,2]}'  # compact


def test_json_read_errors_are_one_line_naming_the_file(tmp_path):
    with pytest.raises(errors.DataError, match=r"results not found: .*nope.json; make it") as err:
        files.read_json(tmp_path / "nope.json", "results", fix="make it")
    assert "\n" not in str(err.value)
    bad = tmp_path / "bad.json"
    for content in (b'{"a": 1', b"\xff\xfe", b""):
        bad.write_bytes(content)
        with pytest.raises(errors.DataError, match="bad.json is unreadable or corrupt"):
            files.read_json(bad)
    with pytest.raises(errors.DataError, match="training state x.npz is unreadable"):
        files.parse_json(b"{", "x.npz", "training state")
    assert files.parse_json(b'{"step": 3}', "x") == {"step": 3}
