"""``training.flagfiles``: a flagfile that cannot be read as flags is refused in one line before absl reads it,
and the flags a recipe trains are read with the flagfiles it includes expanded."""

import os
import sys

import pytest

from flags import cli
from training import flagfiles


def test_a_flagfile_that_is_no_small_regular_file_is_named_in_one_line(tmp_path):
    pipe = tmp_path / "flags.txt"
    os.mkfifo(pipe)
    top = tmp_path / "top.cfg"
    top.write_text(f"# includes a pipe\n--epochs=1\n  --flagfile={pipe}\n")
    # Nested in the file named, as the argument absl takes in two words, or as one: each found before it blocks.
    for argv in ([f"--flagfile={top}"], ["--flagfile", str(top)], [f"-flagfile={pipe}"]):
        assert flagfiles.problem(argv) == f"--flagfile {pipe} is a named pipe, not a regular file"
    assert flagfiles.problem(["--flagfile=/dev/zero"]) == (
        "--flagfile /dev/zero is a character device, not a regular file")
    assert flagfiles.problem([f"--flagfile={tmp_path}"]) == f"--flagfile {tmp_path} is a directory, not a regular file"
    huge = tmp_path / "huge.cfg"
    os.truncate(huge.write_text("") or huge, flagfiles.MAX_FLAGFILE_BYTES + 1)
    assert flagfiles.problem([f"--flagfile={huge}"]) == (
        f"--flagfile {huge} is 1,048,577 bytes, more than the 1,048,576 of any flagfile")
    # Readable files, a missing one (absl's own error names it) and a file that includes itself pass here.
    loop = tmp_path / "loop.cfg"
    loop.write_text(f"--flagfile={loop}\n--epochs=2\n")
    assert flagfiles.problem([f"--flagfile={loop}", "--flagfile=/nonexistent.cfg", "--epochs=3"]) is None


def test_every_command_refuses_a_planted_pipe_before_anything_reads_it(tmp_path, monkeypatch, capsys):
    pipe = tmp_path / "flags.txt"
    os.mkfifo(pipe)
    monkeypatch.setattr(sys, "argv", ["train.py", f"--flagfile={pipe}"])
    with pytest.raises(SystemExit) as stop:  # before: no output, blocked until killed
        cli.run("train", lambda arguments: pytest.fail("the body ran"))
    assert stop.value.code == 2
    assert capsys.readouterr().err == f"train: error: --flagfile {pipe} is a named pipe, not a regular file\n"


def test_a_recipes_flags_include_its_nested_flagfiles_in_place(tmp_path):
    base, top = tmp_path / "base.cfg", tmp_path / "top.cfg"
    base.write_text("# the base\n--epochs=10\n--learning_rate=1.5\n")
    top.write_text(f"--dataset=cifar10\n--flagfile={base}\n--epochs=12  \n")
    assert flagfiles.resolved_flags(str(top)) == ["--dataset=cifar10", "--epochs=10", "--learning_rate=1.5",
                                                  "--epochs=12"]
    base.write_text(f"--flagfile={top}\n")
    with pytest.raises(ValueError, match=f"^{top} includes itself through --flagfile$"):
        flagfiles.resolved_flags(str(top))
