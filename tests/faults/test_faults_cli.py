"""The fault suite, the command line's shared behaviour: option ranges, output checks before
work, --json plumbing, --profile, the error boundary.

Shared fixtures: tests/faults/conftest.py; bad inputs: tests/fault_kit.py."""

from __future__ import annotations

import errno
import json
import shutil

import pytest
from fault_kit import (
    PHOTO,
    good_images,
    jpeg,
    make_mpii,
    one_line_error,
    run,
    snapshot,
    write_gt,
)

from cpm_nb.cli.options import CliError


def test_a_failed_command_leaves_an_existing_json_out_alone(tmp_path, capsys):
    gt = tmp_path / "gt.mat"
    write_gt(gt)
    scores = tmp_path / "scores.json"
    scores.write_text('{"mean": 90.0}\n')
    before = snapshot(scores)
    code, _, err = run(["evaluate-mpii", "--annotations", gt, "--predictions",
                        tmp_path / "missing.mat", "--json-out", scores], capsys)
    assert code == 2
    one_line_error(err, "predictions file not found", "missing.mat")
    assert snapshot(scores) == before



NUMERIC = [
    (["prepare", "mpii", "--root", "{tmp}/r", "--max-people", "-3"], "integer >= 1, got -3"),
    (["prepare", "mpii", "--root", "{tmp}/r", "--max-people", "0"], "integer >= 1, got 0"),
    (["prepare", "mpii", "--root", "{tmp}/r", "--max-people", "many"], "expected an integer"),
    (["prepare", "mpii", "--root", "{tmp}/r", "--input-size", "30"], "a multiple of 8, got 30"),
    (["prepare", "mpii", "--root", "{tmp}/r", "--input-size", "100000"], "from 16 to 2048"),
    (["prepare", "synthetic", "--seed", "-1"], "integer >= 0, got -1"),
    (["predict", "x.jpg", "--model", "{run}", "--out", "{tmp}/o", "--batch-size", "0"],
     "integer from 1 to 256, got 0"),
    (["predict", "x.jpg", "--model", "{run}", "--out", "{tmp}/o", "--scale", "0"],
     "number > 0, got 0"),
    (["predict", "x.jpg", "--model", "{run}", "--out", "{tmp}/o", "--scale", "nan"],
     "number > 0, got nan"),
    (["predict", "x.jpg", "--model", "{run}", "--out", "{tmp}/o", "--center", "inf", "3"],
     "--center: must be a number"),
    (["predict", "x.jpg", "--model", "{run}", "--out", "{tmp}/o", "--min-confidence", "2"],
     "number in [0, 1], got 2"),
    (["evaluate-mpii", "--annotations", "a", "--predictions", "b", "--threshold", "0"],
     "number in (0, 1], got 0"),
    (["evaluate-mpii", "--annotations", "a", "--predictions", "b", "--threshold", "1.5"],
     "number in (0, 1], got 1.5"),
    (["notebooks", "--timeout", "0"], "integer >= 1, got 0"),
]


@pytest.mark.parametrize("argv, message", NUMERIC, ids=[f"{a[0]}{a[-2]}{a[-1]}"
                                                         for a, _ in NUMERIC])
def test_numeric_options_name_their_valid_range(tmp_path, capsys, run_folder, argv, message):
    argv = [a.format(tmp=tmp_path, run=run_folder) for a in argv]
    code, out, err = run(argv, capsys)
    assert code == 2 and out == ""
    one_line_error(err, message)
    assert list(tmp_path.iterdir()) == []  # nothing was done




OUTPUTS = [
    (["evaluate-mpii", "--annotations", "{gt}", "--predictions", "{gt}", "--json-out",
      "{tmp}"], "--json-out {tmp} is a folder"),
    (["evaluate-mpii", "--annotations", "{gt}", "--predictions", "{gt}", "--json-out",
      "{gt}/s.json"], "{gt} is a file, not a folder"),
    (["predict", "{img}", "--model", "{run}", "--out", "{gt}"], "--out {gt} is a file"),
    (["predict", "{img}", "--model", "{run}", "--out", "{tmp}/o", "--json-out", "{img}"],
     "--json-out {img} is the input {img}"),
    (["export", "--model", "{run}", "--out", "{gt}"], "--out {gt} is a file"),
    (["prepare", "mpii", "--root", "{gt}", "--no-download"], "--root {gt} is a file"),
    (["prepare", "mpii", "--root", "{tmp}/r", "--out", "{gt}/x", "--no-download"],
     "{gt} is a file, not a folder"),
    (["info", "--json-out", "{gt}/info.json"], "{gt} is a file, not a folder"),
    (["evaluate-mpii", "--annotations", "{gt}", "--predictions", "{gt}", "--json-out",
      "{gt}"], "--json-out {gt} is the input {gt}"),
    (["prepare", "mpii", "--root", "{tmp}/r", "--images", "{tmp}", "--out", "{tmp}",
      "--no-download"], "--out {tmp} is the input {tmp}"),
]


@pytest.mark.parametrize("argv, message", OUTPUTS, ids=[f"{a[0]}-{i}"
                                                        for i, (a, _) in enumerate(OUTPUTS)])
def test_unwritable_outputs_fail_before_any_work(tmp_path, capsys, run_folder, argv, message):
    gt = tmp_path / "gt.mat"
    write_gt(gt)
    img = tmp_path / "a.jpg"
    img.write_bytes(jpeg())
    before = snapshot(tmp_path)
    fill = dict(tmp=tmp_path, gt=gt, img=img, run=run_folder)
    code, out, err = run([a.format(**fill) for a in argv], capsys)
    assert code == 2 and out == ""
    one_line_error(err, message.format(**fill))
    assert snapshot(tmp_path) == before and sorted(tmp_path.iterdir()) == [img, gt]




# === 8. option parsing ======================================================================================


def test_json_never_takes_an_image_as_its_value(run_folder, tmp_path, capsys):
    a, b = tmp_path / "a.jpg", tmp_path / "b.jpg"
    a.write_bytes(jpeg())
    b.write_bytes(jpeg(PHOTO[::-1]))
    before = snapshot(a, b)
    code, out, err = run(["predict", "--model", run_folder, "--out", tmp_path / "o", "--json",
                          a, b], capsys)
    assert code == 0, err
    doc = json.loads(out)  # stdout is the JSON and nothing else
    assert [r["image"] for r in doc["results"]] == [str(a), str(b)]
    assert snapshot(a, b) == before


@pytest.mark.parametrize("style", ["space", "equals"])
def test_json_with_a_file_name_points_to_json_out(tmp_path, capsys, style):
    gt = tmp_path / "gt.mat"
    write_gt(gt)
    target = tmp_path / "scores.json"
    opt = ["--json", str(target)] if style == "space" else [f"--json={target}"]
    code, out, err = run(["evaluate-mpii", "--annotations", gt, "--predictions", gt, *opt],
                         capsys)
    assert code == 2 and out == ""
    one_line_error(err, "use --json-out FILE")
    assert not target.exists()


def test_json_and_json_out_are_exclusive(tmp_path, capsys):
    code, _, err = run(["info", "--json", "--json-out", tmp_path / "i.json"], capsys)
    assert code == 2
    one_line_error(err, "not allowed with argument")


def test_json_on_stdout_is_only_the_json(tmp_path, capsys):
    argv = make_mpii(tmp_path, good_images(2))
    code, out, err = run([*argv, "--json"], capsys)
    assert code == 0
    assert json.loads(out)["source"] == "mpii"
    assert "reading" in err  # the progress line went to stderr


@pytest.mark.parametrize("argv, profile", [
    (["info", "--json", "--profile", "cpu"], "cpu"),
    (["--profile", "gpu", "info", "--json"], "gpu"),
    (["--profile", "gpu", "info", "--profile", "cpu", "--json"], "cpu"),
])
def test_profile_is_accepted_after_the_subcommand(capsys, argv, profile):
    from cpm_nb.core import config

    try:
        code, out, err = run(argv, capsys)
        assert code == 0, err
        assert json.loads(out)["profile"] == profile
    finally:
        config.set_profile("fast")


def test_profile_after_a_nested_subcommand_and_a_bad_one(synthetic_copy, capsys):
    code, out, err = run(["prepare", "synthetic", "--quiet", "--profile", "fast", "--json"],
                         capsys)
    assert code == 0 and json.loads(out)["profile"] == "fast", err
    code, _, err = run(["info", "--profile", "nonsense"], capsys)
    assert code == 2
    one_line_error(err, "unknown profile 'nonsense'")


def _run_copy(run_folder, tmp_path):
    model = tmp_path / "run"
    shutil.copytree(run_folder, model)
    return model


@pytest.mark.parametrize("how", ["same", "symlink", "hardlink", "inside", "dot-dot"])
@pytest.mark.parametrize("command", ["evaluate", "export", "predict"])
def test_an_output_is_never_one_of_the_inputs(run_folder, tmp_path, capsys, command, how):
    """--json-out onto the model (by any name) is refused before any work; the model
    stays byte-identical."""
    import os

    model = _run_copy(run_folder, tmp_path)
    keras_file = model / "model.keras"
    img = tmp_path / "a.jpg"
    img.write_bytes(jpeg())
    target = {"same": keras_file, "inside": keras_file,
              "dot-dot": model / ".." / "run" / "model.keras"}.get(how)
    if how == "symlink":
        target = tmp_path / "link.keras"
        target.symlink_to(keras_file)
    elif how == "hardlink":
        target = tmp_path / "hard.keras"
        os.link(keras_file, target)
    given = keras_file if how == "same" else model
    argv = {"evaluate": ["evaluate", "--model", given],
            "export": ["export", "--model", given, "--out", tmp_path / "e"],
            "predict": ["predict", img, "--model", given, "--out", tmp_path / "o"]}[command]
    before = snapshot(tmp_path)
    code, out, err = run([*argv, "--json-out", target], capsys)
    assert code == 2 and out == ""
    one_line_error(err, "--json-out", "would overwrite its own input")
    assert snapshot(tmp_path) == before


def test_a_folder_that_is_replaced_may_not_hold_an_input(run_folder, tmp_path, capsys):
    model = _run_copy(run_folder, tmp_path)
    before = snapshot(model)
    for out in (model, tmp_path):
        code, _, err = run(["export", "--model", model, "--out", out], capsys)
        assert code == 2
        one_line_error(err, "--out", "would overwrite its own input")
    assert snapshot(model) == before


def test_a_result_written_into_an_input_folder_may_be_written_again(run_folder, tmp_path,
                                                                   capsys):
    """Not every file in an input folder is an input: scores.json may be rewritten."""
    import argparse

    from cpm_nb.cli.options import check_outputs

    model = _run_copy(run_folder, tmp_path)
    (model / "scores.json").write_text("{}")
    check_outputs(argparse.Namespace(command="evaluate", model=str(model),
                                     json=str(model / "scores.json")))
    with pytest.raises(CliError, match="is a file of the input folder"):
        check_outputs(argparse.Namespace(command="evaluate", model=str(model),
                                         json=str(model / "cpm_config.json")))


def _named(name):
    return type(name, (Exception,), {})


@pytest.mark.parametrize("raised, status, message", [
    (KeyboardInterrupt(), 130, "interrupted; finished outputs are kept"),
    (MemoryError(), 2, "out of memory; close other programs or use a smaller profile"),
    (_named("ResourceExhaustedError")("OOM when allocating tensor"), 2,
     "out of memory (OOM when allocating tensor); close other programs"),
    (_named("ResourceExhaustedError")("/x/saved_model; No space left on device"), 2,
     "no space left on the disk"),
    (_named("DataLossError")("corrupted record at 12"), 2,
     "corrupted data (corrupted record at 12); re-create the TFRecords"),
    (PermissionError(errno.EACCES, "Permission denied", "/data/x"), 2,
     "Permission denied: /data/x"),
    (OSError(errno.ENOSPC, "No space left on device", "/data/x.tmp"), 2,
     "no space left on the disk while writing /data/x.tmp; free some space"),
    (RecursionError("maximum recursion depth exceeded"), 2, "input nested too deeply"),
    (ValueError("cannot reshape array of size 7 into shape (3,3)"), 2,
     "unexpected ValueError: cannot reshape array of size 7"),
    (KeyError("stages"), 2, "unexpected KeyError: 'stages'; the input may be malformed"),
    (_named("CellExecutionError")("...\nZeroDivisionError: division by zero"), 2,
     "a notebook cell failed: ZeroDivisionError: division by zero"),
])
def test_failures_deep_inside_a_command_are_one_line(capsys, monkeypatch, raised, status,
                                                     message):
    """The boundary maps any exception by meaning: no traceback, no 'out of memory' for a
    full disk, and advice that fits the command (info has no --batch-size)."""
    from cpm_nb.core import session

    def fail(*args, **kwargs):
        raise raised

    monkeypatch.setattr(session, "describe", fail)
    code, out, err = run(["info"], capsys)
    assert code == status and out == ""
    line = one_line_error(err, "cpm-nb info: error: ", message)
    assert "--batch-size" not in line


def test_memory_advice_names_batch_size_only_where_the_command_has_it(run_folder, tmp_path,
                                                                     capsys, monkeypatch):
    from cpm_nb.inference import predict as P

    def fail(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(P.Predictor, "predict_many", fail)
    img = tmp_path / "a.jpg"
    img.write_bytes(jpeg())
    code, _, err = run(["predict", img, "--model", run_folder, "--out", tmp_path / "o"],
                       capsys)
    assert code == 2
    one_line_error(err, "out of memory", str(img), "try a smaller --batch-size")


def test_debug_shows_the_traceback(capsys, monkeypatch):
    from cpm_nb.core import session

    def fail(*args, **kwargs):
        raise ValueError("deep inside")

    monkeypatch.setattr(session, "describe", fail)
    for argv, env in ((["--debug", "info"], None), (["info", "--debug"], None),
                      (["info"], "1")):
        if env:
            monkeypatch.setenv("CPM_NB_DEBUG", env)
        with pytest.raises(ValueError, match="deep inside"):
            run(argv, capsys)
    with pytest.raises(SystemExit):
        run(["--help"], capsys)
    assert "CPM_NB_DEBUG=1" in capsys.readouterr().out


def test_sigterm_is_an_interruption(capsys, monkeypatch):
    import os
    import signal

    from cpm_nb.core import session

    def killed(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("SIGTERM did not stop the command")

    monkeypatch.setattr(session, "describe", killed)
    code, out, err = run(["info"], capsys)
    assert code == 130
    one_line_error(err, "interrupted")
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # restored


def test_a_failure_caused_by_an_interruption_is_still_130(capsys, monkeypatch):
    """Ctrl-C kills a notebook's kernel too: the DeadKernelError that follows is 130."""
    import os
    import signal

    from cpm_nb.core import session

    def dead_kernel(*args, **kwargs):
        try:
            os.kill(os.getpid(), signal.SIGINT)
        except KeyboardInterrupt:
            pass  # what nbclient does with it: the kernel is gone, it raises its own
        raise _named("DeadKernelError")("Kernel died")

    monkeypatch.setattr(session, "describe", dead_kernel)
    code, _, err = run(["info"], capsys)
    assert code == 130
    one_line_error(err, "interrupted")


def test_training_interrupted_says_resume(tmp_path, capsys, monkeypatch):
    """Re-running an interrupted train without --resume is refused: the advice says so."""
    from cpm_nb.training import loop

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "train", interrupted)
    code, _, err = run(["train", "--out", tmp_path / "run", "--steps", "2"], capsys)
    assert code == 130
    one_line_error(err.splitlines()[-1], "interrupted", "add --resume")


def test_an_unsupported_keras_backend_is_one_line(capsys, monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    code, out, err = run(["info"], capsys)
    assert code == 2 and out == ""
    one_line_error(err, "KERAS_BACKEND=torch is not supported", "tensorflow or jax")


def test_short_version_flag(capsys):
    with pytest.raises(SystemExit) as done:
        run(["-V"], capsys)
    assert done.value.code in (0, None)
    assert capsys.readouterr().out.startswith("cpm-nb ")


class _ClosedPipe:
    """A stdout whose reader has gone (`| head -1` after its line)."""

    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self):
        raise BrokenPipeError(32, "Broken pipe")


def test_json_out_survives_a_reader_that_quits(tmp_path, capsys, monkeypatch):
    import sys

    target = tmp_path / "info.json"
    monkeypatch.setattr(sys, "stdout", _ClosedPipe())
    from cpm_nb.cli import app

    code = app.main(["info", "--json-out", str(target)])
    err = capsys.readouterr().err
    assert code == 0 and "Broken pipe" not in err and "error" not in err
    assert json.loads(target.read_text())["profile"]


def test_info_names_the_folders(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("CPM_NB_RUNS", str(tmp_path / "runs"))
    code, out, _ = run(["info"], capsys)
    assert code == 0 and f"runs folder     {tmp_path / 'runs'}" in out
    code, out, _ = run(["info", "--json"], capsys)
    assert json.loads(out)["folders"]["runs"] == str(tmp_path / "runs")
