"""Faults of the run directory itself: a folder that is not a run, planted symbolic links, a finished run started
again, what killed saves and workers leave, a full or read-only disk. Each test does the fault and checks what is
left. Tiny in-process runs on the bundled MNIST cut (~1 s each)."""

import dataclasses
import errno
import fcntl
import json
import logging
import os
import pathlib
import re
import shutil
import tempfile

import numpy as np
import pytest
import tensorflow as tf

from training import data as data_lib
from training import run_files
from training.errors import RunError
from training.rundir import UNREADABLE_KEPT, RunDir
from training.trainer import train

BASE_STEPS, MORE_STEPS = 40, 50  # checkpoints every 10 steps: ckpt-20, -30 and -40 are kept (max_to_keep=3)
REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_mnist):
    """A finished 40-step run with checkpoints at steps 20, 30 and 40; tests fault copies of it."""
    from training.config import TrainConfig
    logdir = tmp_path_factory.mktemp("finished") / "run"
    config = TrainConfig(arch="c4k3-m2-d16", batch_size=64, train_steps=BASE_STEPS, log_every=10, steps_per_loop=10,
                         checkpoint_every=10, eval_batch_size=256, allow_download=False, deterministic=True,
                         logdir=str(logdir))
    train(config, dataset=tiny_mnist)
    return config


def _copy(finished_run, tmp_path, train_steps=MORE_STEPS):
    logdir = tmp_path / "run"
    shutil.copytree(finished_run.logdir, logdir)
    return dataclasses.replace(finished_run, logdir=str(logdir), train_steps=train_steps), logdir


def _files(folder):
    """Every file under ``folder`` with its bytes (symbolic links as their target)."""
    return {str(p.relative_to(folder)): os.readlink(p) if p.is_symlink() else p.read_bytes()
            for p in folder.rglob("*") if p.is_file() or p.is_symlink()}


def _history(logdir):
    return [start["from_step"] for start in json.loads((logdir / "config.json").read_text())["history"]]


# 1. A folder that is not a run --------------------------------------------------------------------------------

def test_a_folder_of_someone_elses_files_is_refused_and_left_as_it_was(tmp_path, tiny_config, tiny_mnist):
    # In-process: a RunError reaches the console as one line and exit 1 through flags.cli.run, checked end to end
    # for every command by tests/test_console.py and tests/test_flags_cli.py.
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "results.json").write_text("notes\n")
    (folder / "flags.txt").write_text("keep\n")
    with pytest.raises(RunError, match=re.escape(f"--logdir {folder} holds files that are not a run of "
                                                 "training.train (flags.txt, results.json); choose a new --logdir")):
        train(tiny_config(folder), dataset=tiny_mnist)
    assert _files(folder) == {"results.json": b"notes\n", "flags.txt": b"keep\n"}  # and no .lock left


@pytest.mark.parametrize("content", ['{"notes": "mine"}', '{"config": {"arch": "d8"}, "history": [], "x": 1}'])
def test_a_config_json_that_training_did_not_write_is_refused(tmp_path, tiny_config, tiny_mnist, content):
    (tmp_path / "config.json").write_text(content)
    with pytest.raises(RunError, match=rf"^--logdir {tmp_path} holds files that are not a run of training.train "
                                       rf"\(config.json\); choose a new --logdir$"):
        train(tiny_config(tmp_path), dataset=tiny_mnist)
    assert _files(tmp_path) == {"config.json": content.encode()}


def test_a_run_written_before_the_mark_still_resumes(finished_run, tmp_path, tiny_mnist):
    config, logdir = _copy(finished_run, tmp_path)
    saved = json.loads((logdir / "config.json").read_text())
    del saved["format"], saved["data"]  # config.json as the code before the mark wrote it: config, network, history
    (logdir / "config.json").write_text(json.dumps(saved))
    assert train(config, dataset=tiny_mnist).results["train_steps"] == MORE_STEPS
    assert _history(logdir) == [0, BASE_STEPS]
    assert json.loads((logdir / "config.json").read_text())["format"] == run_files.RUN_FORMAT


def test_every_committed_run_is_recognised_as_a_run():
    # experiments read these (run_files.read_saved); a sweep continued on another machine resumes them.
    runs = sorted(path.parent for path in (REPO_ROOT / "sweeps" / "runs").rglob("config.json"))
    assert len(runs) > 100
    assert [run for run in runs if not run_files.is_run(str(run))] == []


@pytest.mark.parametrize("record, warned", [
    (lambda saved: {k: v for k, v in saved.items() if k != "evaluations"}, False),  # written by older code
    pytest.param(lambda saved: dict(saved, train_seconds="1:05"), True, marks=pytest.mark.slow),  # edited by hand
])
def test_a_clock_record_without_a_readable_curve_resumes_with_the_curve_marked_unknown(finished_run, tmp_path,
                                                                                      tiny_mnist, caplog, record,
                                                                                      warned):
    caplog.set_level(logging.INFO, logger="absl")
    config, logdir = _copy(finished_run, tmp_path)
    clocks = json.loads((logdir / "clock.json").read_text())
    # The record of the last checkpoint holds the evaluations before it; the final one comes after the save.
    assert [e[0] for e in clocks[str(BASE_STEPS)]["evaluations"]] == finished_run_evaluation_steps(logdir)[:-1]
    clocks[str(BASE_STEPS)] = record(clocks[str(BASE_STEPS)])
    (logdir / "clock.json").write_text(json.dumps(clocks))
    results = train(config, dataset=tiny_mnist).results
    # Half a curve would read as the whole: results.json says it is not known rather than start it at step 40.
    assert results["train_steps"] == MORE_STEPS and results["evaluations"] is None
    warning = (f"clock.json's record of step {BASE_STEPS} is unreadable; the time and evaluations before this "
               "start are not counted")
    older = (f"clock.json's record of step {BASE_STEPS} keeps no evaluations (older code): results.json's learning "
             "curve will be null")
    assert (warning in caplog.messages, older in caplog.messages) == (warned, not warned)


def finished_run_evaluation_steps(logdir):
    return [e["step"] for e in json.loads((logdir / "results.json").read_text())["evaluations"]]


# 2. Planted symbolic links --------------------------------------------------------------------------------------

PLANTED = ("config.json.tmp", "results.json.tmp", "clock.json.tmp", "checkpoints/checkpoint.tmp",
           ".config.json.x.tmp")


def test_links_planted_at_temporary_names_are_never_written_through(finished_run, tmp_path, tiny_mnist):
    config, logdir = _copy(finished_run, tmp_path)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    for name in PLANTED:
        (logdir / name).symlink_to(victim)
    train(config, dataset=tiny_mnist)
    assert victim.read_text() == "precious\n"
    assert not any((logdir / name).is_symlink() for name in ("config.json", "results.json", "clock.json"))
    assert json.loads((logdir / "results.json").read_text())["train_steps"] == MORE_STEPS


def test_a_run_file_gets_the_mode_a_plain_write_would_give_it(tmp_path):
    run_files.write_atomically(str(tmp_path / "results.json"), "{}")
    with open(tmp_path / "plain", "w"):
        pass
    assert oct((tmp_path / "results.json").stat().st_mode) == oct((tmp_path / "plain").stat().st_mode)
    umask = os.umask(0o027)
    try:  # the umask of the moment, not one read once
        run_files.write_atomically(str(tmp_path / "results.json"), "{}")
    finally:
        os.umask(umask)
    assert oct((tmp_path / "results.json").stat().st_mode & 0o777) == oct(0o640)


@pytest.mark.parametrize("name", run_files.RUN_FILES)
def test_a_run_whose_own_file_is_a_link_is_refused(finished_run, tmp_path, tiny_mnist, name):
    config, logdir = _copy(finished_run, tmp_path)
    victim = tmp_path / "victim"
    victim.mkdir() if name in ("checkpoints", "train", "eval") else victim.write_text("precious\n")
    if (logdir / name).is_dir():
        shutil.rmtree(logdir / name)
    elif (logdir / name).exists():
        (logdir / name).unlink()
    (logdir / name).symlink_to(victim)
    before = _files(logdir)
    with pytest.raises(RunError, match=rf"^{logdir / name} is a symbolic link \(to {victim}\); a run writes only "
                                       rf"its own files: remove the link, or choose a new --logdir$"):
        train(config, dataset=tiny_mnist)
    assert _files(logdir) == before
    assert victim.is_dir() or victim.read_text() == "precious\n"


def test_a_lock_file_hard_linked_to_another_file_is_refused_and_not_emptied(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (tmp_path / "run").mkdir()
    os.link(victim, tmp_path / "run" / ".lock")
    with pytest.raises(RunError, match=rf"^{tmp_path / 'run' / '.lock'} is not a plain file of this run \(a hard "
                                       rf"link or a special file\); remove it, or choose a new --logdir$"):
        RunDir(str(tmp_path / "run")).lock()
    assert victim.read_text() == "precious\n"


# 3. A finished run's command run again ---------------------------------------------------------------------

def test_a_finished_run_started_again_keeps_its_results(finished_run, tmp_path, tiny_mnist, caplog):
    config, logdir = _copy(finished_run, tmp_path, train_steps=BASE_STEPS)
    before = _files(logdir)
    caplog.set_level(logging.INFO, logger="absl")
    results = train(config, dataset=tiny_mnist).results
    assert results == json.loads(before["results.json"])
    after = _files(logdir)
    # Every resume writes the checkpoint state file anew (rundir.RunDir._forget_newer_than), listing the same
    # checkpoints; everything else (results, config history, flags, clock, checkpoints) is as it was.
    assert after.pop("checkpoints/checkpoint").startswith(b'model_checkpoint_path: "ckpt-40"')
    del before["checkpoints/checkpoint"]
    assert after == before
    assert f"the run in {logdir} had already finished at step {BASE_STEPS}; its results are in " \
           f"{logdir / 'results.json'}, unchanged" in caplog.messages


# 4. What killed saves and workers leave -------------------------------------------------------------------------

def _killed_save(checkpoints, step):
    """What TensorFlow's writer leaves when killed mid-save of ``ckpt-<step>``: the files of its folder
    ``ckpt-<step>_temp`` (as functional_saver.py names them), and a half-written state file."""
    folder = checkpoints / f"ckpt-{step}_temp"
    folder.mkdir(parents=True)
    (folder / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"\0" * 64)
    (folder / "part-00000-of-00001.index").write_bytes(b"\0" * 8)
    (checkpoints / "checkpoint.tmp0123456789abcdef").write_text('model_checkpoint_path: "ckpt')


def test_a_run_killed_during_its_first_save_starts_again_from_step_0(tmp_path, tiny_config, tiny_mnist):
    config = tiny_config(tmp_path, checkpoint_every=10)
    RunDir(config.logdir).prepare(config)  # the start that was killed got as far as its first save
    _killed_save(tmp_path / "checkpoints", 10)
    assert train(config, dataset=tiny_mnist).results["train_steps"] == config.train_steps
    assert _history(tmp_path) == [0, 0]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "checkpoint", "ckpt-10.data-00000-of-00001", "ckpt-10.index", "ckpt-20.data-00000-of-00001",
        "ckpt-20.index"]


def _saved_steps(checkpoints, steps):
    """A run directory's checkpoints folder holding checkpoints at ``steps`` of one variable, and its RunDir."""
    import tensorflow as tf

    step = tf.Variable(0, dtype=tf.int64)
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(step=step), str(checkpoints), max_to_keep=3)
    for number in steps:
        step.assign(number)
        manager.save(checkpoint_number=number)
    return tf.train.Checkpoint(step=tf.Variable(0, dtype=tf.int64)), RunDir(str(checkpoints.parent))


def test_later_killed_saves_are_removed_and_only_the_newest_unreadable_files_kept(tmp_path, caplog):
    checkpoints = tmp_path / "checkpoints"
    checkpoint, run_dir = _saved_steps(checkpoints, [10, 20])
    _killed_save(checkpoints, 30)
    (checkpoints / ".checkpoint.a1b2.tmp").write_text("half")  # write_atomically's, killed
    for step in (3, 5, 7):  # set aside by earlier resumes
        for suffix in ("index", "data-00000-of-00001"):
            (checkpoints / f"ckpt-{step}.{suffix}.unreadable").write_bytes(b"x")
    caplog.set_level(logging.INFO, logger="absl")
    assert run_dir.restore_latest(checkpoint, checkpoint.step) == str(checkpoints / "ckpt-20")
    assert sorted(p.name for p in checkpoints.iterdir()) == [
        "checkpoint", "ckpt-10.data-00000-of-00001", "ckpt-10.index", "ckpt-20.data-00000-of-00001",
        "ckpt-20.index", "ckpt-5.data-00000-of-00001.unreadable", "ckpt-5.index.unreadable",
        "ckpt-7.data-00000-of-00001.unreadable", "ckpt-7.index.unreadable"]
    assert UNREADABLE_KEPT == 2
    assert (f"removed what killed checkpoint saves left in {checkpoints}: checkpoint.tmp0123456789abcdef, "
            f"ckpt-30_temp, .checkpoint.a1b2.tmp") in caplog.messages
    assert (f"deleted the unreadable files set aside of checkpoints ckpt-3; those of the newest 2 damaged "
            f"checkpoints are kept in {checkpoints}") in caplog.messages


def test_a_killed_workers_temporary_directory_is_removed_by_the_next_worker_of_its_name(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    live = RunDir(str(tmp_path / "run"), chief=False, worker_name="worker-1")
    live.lock()
    dead = tmp_path / "worker-1-dead"  # what kill -9 leaves: the folder, its lock file without a flock
    (dead / "checkpoints").mkdir(parents=True)
    (dead / ".lock").write_text("")
    (dead / "clock.json").write_text("{}")
    notes = tmp_path / "worker-1-notes"  # not a worker's: holds another file
    notes.mkdir()
    (notes / ".lock").write_text("")
    (notes / "notes.txt").write_text("keep")
    other = tmp_path / "worker-2-dead"  # another worker's name: its own next start cleans it
    shutil.copytree(dead, other)
    worker = RunDir(str(tmp_path / "run"), chief=False, worker_name="worker-1")
    worker.lock()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [os.path.basename(live.own_dir), os.path.basename(worker.own_dir), "worker-1-notes", "worker-2-dead"])
    for run_dir in (live, worker):
        run_dir.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["worker-1-notes", "worker-2-dead"]


# 5. A full disk, a read-only folder -----------------------------------------------------------------------------

def _fail_replacing(monkeypatch, name, number):
    """``os.replace`` fails as a full (or read-only, ...) disk makes it, for a destination named ``name``."""
    real_replace = os.replace

    def replace(source, destination, *args, **kwargs):
        if os.path.basename(destination) == name:
            raise OSError(number, os.strerror(number), destination)
        return real_replace(source, destination, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)


# When each file is written by a resume of the finished run to 50 steps: config.json at the start, clock.json
# with the checkpoint at step 50, results.json at the end.
@pytest.mark.parametrize("name", [pytest.param("config.json", marks=pytest.mark.slow),
                                  pytest.param("clock.json", marks=pytest.mark.slow), "results.json"])
def test_a_full_disk_stops_the_run_in_one_line_and_keeps_the_previous_file(finished_run, tmp_path, tiny_mnist,
                                                                          monkeypatch, name):
    config, logdir = _copy(finished_run, tmp_path)
    before = (logdir / name).read_bytes()
    _fail_replacing(monkeypatch, name, errno.ENOSPC)
    with pytest.raises(RunError, match=rf"^cannot write {logdir / name} \(No space left on device\): free space on "
                                       rf"its disk, then run the same command again to resume from the last "
                                       rf"checkpoint; the previous {name} is unchanged$"):
        train(config, dataset=tiny_mnist)
    assert (logdir / name).read_bytes() == before
    assert run_files.write_leftovers(str(logdir)) == [] and not (logdir / ".lock").exists()
    monkeypatch.undo()  # the disk has room again: the same command finishes the run
    assert train(config, dataset=tiny_mnist).results["train_steps"] == MORE_STEPS


@pytest.mark.parametrize("number, remedy", [
    (errno.EROFS, "{folder} is on a read-only filesystem: remount it writable or copy the run elsewhere"),
    (errno.EACCES, "make {folder} writable for this user"),
])
def test_a_lock_that_cannot_be_written_stops_in_one_line(tmp_path, monkeypatch, number, remedy):
    # Root ignores permissions (these tests may run as root), so the failure is made by replacing os.open.
    lock = tmp_path / ".lock"
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda path, *args, **kwargs: (
        _raise(OSError(number, os.strerror(number), path)) if path == str(lock) else real_open(path, *args, **kwargs)))
    with pytest.raises(RunError, match=rf"^cannot write {lock} \({os.strerror(number)}\): "
                                       rf"{remedy.format(folder=tmp_path)}, then run the same command again"):
        RunDir(str(tmp_path)).lock()


def _raise(error):
    raise error


def test_a_full_disk_while_naming_the_lock_holder_releases_the_lock(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "pwrite", lambda *args: _raise(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))))
    with pytest.raises(RunError, match=rf"^cannot write {tmp_path / '.lock'} \(No space left on device\): free "
                                       rf"space on its disk"):
        RunDir(str(tmp_path)).lock()
    with open(tmp_path / ".lock") as file:
        fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a folder of mode 0o555: the monkeypatched "
                                              "failures above stand in for it")
def test_a_read_only_run_folder_stops_in_one_line_and_changes_nothing(finished_run, tmp_path, tiny_mnist):
    config, logdir = _copy(finished_run, tmp_path)
    before = _files(logdir)
    logdir.chmod(0o555)
    try:
        with pytest.raises(RunError, match=rf"^cannot write {logdir / '.lock'} \(Permission denied\): make "
                                           rf"{logdir} writable for this user"):
            train(config, dataset=tiny_mnist)
    finally:
        logdir.chmod(0o755)
    assert _files(logdir) == before


# TensorFlow's own writes. Its file system reports a full disk as ``<path>; No space left on device`` in a
# ResourceExhaustedError (seen on a 700 KiB tmpfs: the SaveV2 of a tiny run's third checkpoint; an 8 KiB one
# mounted on train/: the FlushSummaryWriter of its first scalars). The ops are replaced by ones that fail so,
# which works as root and without mounting anything.
NO_SPACE = os.strerror(errno.ENOSPC)


def _fail_checkpoint_save(monkeypatch, step):
    """The SaveV2 of checkpoint ``step`` writes its temporary files, then fails as a full disk made it fail."""
    from tensorflow.python.ops import io_ops
    real_save = io_ops.save_v2

    def save_v2(prefix, *args, **kwargs):
        written = real_save(prefix, *args, **kwargs)
        if f"ckpt-{step}_temp" in prefix.numpy().decode():
            raise tf.errors.ResourceExhaustedError(None, None, f"{prefix.numpy().decode()}.data-00000-of-00001"
                                                   f".tempstate123; {NO_SPACE}")
        return written

    monkeypatch.setattr(io_ops, "save_v2", save_v2)


@pytest.mark.parametrize("fail_at", [30, pytest.param(10, marks=pytest.mark.slow)], ids=["third_save", "first_save"])
def test_a_full_disk_under_a_checkpoint_save_stops_in_one_line_and_loses_nothing(finished_run, tmp_path, tiny_mnist,
                                                                                monkeypatch, fail_at):
    # The finished run's own command in a new folder: checkpoints at 10 and 20, then the disk is full at 30.
    config = dataclasses.replace(finished_run, logdir=str(tmp_path / "run"))
    kept = (f" to resume from its last checkpoint, {tmp_path}/run/checkpoints/ckpt-20, which is kept" if fail_at == 30
            else "; no checkpoint had been saved, so it starts from step 0")
    with monkeypatch.context() as patch:
        _fail_checkpoint_save(patch, fail_at)
        with pytest.raises(RunError) as stopped:
            train(config, dataset=tiny_mnist)  # before: a traceback ending in ResourceExhaustedError
    # flags.cli.run prints it as ``train: error: <it>`` and exits 1 (a RunError, as every run file's fault).
    assert str(stopped.value) == (f"cannot write {tmp_path}/run/checkpoints ({NO_SPACE}): free space on its disk, "
                                  f"then run the same command again{kept}")
    if fail_at == 10:  # a start that saved nothing leaves no run behind, so the disk gets its space back
        assert not (tmp_path / "run").exists()
        return
    assert not (tmp_path / "run" / ".lock").exists() and not (tmp_path / "run" / "results.json").exists()
    train(config, dataset=tiny_mnist)  # the disk has room again: the same command
    assert not list((tmp_path / "run" / "checkpoints").glob("*_temp*"))  # the failed save's files are removed
    # Every saved value (weights, optimizer slots, step) of the last checkpoint, bit for bit the straight run's.
    resumed, straight = (tf.train.load_checkpoint(os.path.join(logdir, "checkpoints", f"ckpt-{BASE_STEPS}"))
                         for logdir in (config.logdir, finished_run.logdir))
    names = sorted(set(straight.get_variable_to_shape_map()) - {"_CHECKPOINTABLE_OBJECT_GRAPH"})
    assert len(names) > 10 and names == sorted(set(resumed.get_variable_to_shape_map()) - {
        "_CHECKPOINTABLE_OBJECT_GRAPH"})
    for name in names:
        np.testing.assert_array_equal(resumed.get_tensor(name), straight.get_tensor(name), err_msg=name)


@pytest.mark.parametrize("loop", ["custom", pytest.param("fit", marks=pytest.mark.slow)])
def test_a_full_disk_under_a_summary_write_stops_in_one_line_and_the_same_command_resumes(tmp_path, tiny_config,
                                                                                        tiny_mnist, monkeypatch,
                                                                                        loop):
    from tensorflow.python.ops import gen_summary_ops
    config = tiny_config(tmp_path, checkpoint_every=10, loop=loop)
    events = tmp_path / "eval" / "events.out.tfevents.1796666199.host.1.0.v2"
    real_flush = gen_summary_ops.flush_summary_writer

    def flush_summary_writer(*args, **kwargs):
        if (tmp_path / "checkpoints" / "ckpt-10.index").exists():  # the disk fills after the first checkpoint
            raise tf.errors.ResourceExhaustedError(None, None, f"{events}; {NO_SPACE}\n\tFailed to flush 1 events "
                                                   f"to {events}\n\tCould not flush events file.")
        return real_flush(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(gen_summary_ops, "flush_summary_writer", flush_summary_writer)
        with pytest.raises(RunError, match=re.escape(
                f"cannot write {tmp_path}/eval ({NO_SPACE}): free space on its disk, then run the same command "
                f"again to resume from its last checkpoint, {tmp_path}/checkpoints/ckpt-10, which is kept")):
            train(config, dataset=tiny_mnist)
    if loop == "custom":  # the disk has room again: the same command finishes the run
        assert train(config, dataset=tiny_mnist).results["train_steps"] == 20


def test_only_a_failed_write_is_taken_for_the_disks_fault():
    assert run_files.disk_fault(f"/r/train/events.out; {NO_SPACE}").args == (errno.ENOSPC, NO_SPACE)
    assert run_files.disk_fault(f"/r/train/events.out; {NO_SPACE}").filename == "/r/train/events.out"
    # Out of memory is a ResourceExhaustedError too, and no failed write.
    assert run_files.disk_fault("OOM when allocating tensor with shape[1024,3,32,32]") is None


# Run files that are no files. Before: a named pipe at results.json, clock.json, preprocessing.json or
# export/export.json blocked whatever read it, silently and for as long as nobody wrote into it, and a link to
# /dev/zero was read until the memory ran out (found with a named pipe as the numerics cache: killed after 70 s).
@pytest.mark.parametrize("kind, why", [
    ("named_pipe", "a named pipe, not a regular file"), ("dev_zero", "a character device, not a regular file"),
    ("directory", "a directory, not a regular file"),
    ("huge", f"{run_files.MAX_JSON_BYTES + 1:,} bytes, more than the {run_files.MAX_JSON_BYTES:,} of any JSON file "
             f"this code writes")])
def test_a_json_file_that_is_no_small_file_is_refused_without_reading_it(tmp_path, kind, why):
    path = tmp_path / "results.json"
    {"named_pipe": lambda: os.mkfifo(path), "dev_zero": lambda: path.symlink_to("/dev/zero"), "directory": path.mkdir,
     "huge": lambda: os.truncate(path.write_text("{") and path, run_files.MAX_JSON_BYTES + 1)}[kind]()
    with pytest.raises(OSError) as error:
        run_files.read_json(path)
    assert error.value.strerror == why


def test_a_json_file_nested_too_deeply_is_a_value_error_as_any_other_damage(tmp_path):
    # Every reader of run files takes ValueError for a damaged file (one line, or timed again for the numerics
    # cache); the decoder's RecursionError was a traceback wherever the file was read.
    path = tmp_path / "race.json"
    path.write_text("[" * 100_000)
    with pytest.raises(ValueError, match="^JSON nested too deeply$"):
        run_files.read_json(path)


def test_a_finished_run_whose_results_json_is_a_named_pipe_is_finished_again(finished_run, tmp_path, tiny_mnist):
    config, logdir = _copy(finished_run, tmp_path, train_steps=BASE_STEPS)
    (logdir / "results.json").unlink()
    os.mkfifo(logdir / "results.json")
    (logdir / "clock.json").unlink()
    os.mkfifo(logdir / "clock.json")
    result = train(config, dataset=tiny_mnist)  # before: blocked for ever reading results.json
    assert result.results["train_steps"] == BASE_STEPS
    assert json.loads((logdir / "results.json").read_text()) == result.results


# 6. The data a run trained on; a run without config.json ----------------------------------------------------------

def _saved(logdir):
    return json.loads((logdir / "config.json").read_text())


def _other_data(dataset):
    """As many images as the run's, but other ones (inverted): a --data_dir whose mnist.npz holds Fashion-MNIST."""
    return dataclasses.replace(dataset, x_train=255 - dataset.x_train, source="inverted tiny MNIST")


def test_config_json_records_the_fingerprint_of_the_data(finished_run, tiny_mnist):
    assert _saved(pathlib.Path(finished_run.logdir))["data"] == {
        "sha256": "7cd1530655342d6b7099a2eab659506c90b74095e3963dd16ddc6e6d81acd997",  # the tiny cut's
        "source": "tiny MNIST cut of the bundled subset", "images": [512, 256]}


def test_a_resume_on_other_data_is_refused_in_one_line_and_changes_nothing(finished_run, tmp_path, tiny_arrays):
    config, logdir = _copy(finished_run, tmp_path)
    folder = tmp_path / "data"
    folder.mkdir()
    np.savez(folder / "mnist.npz", **dict(tiny_arrays, x_train=255 - tiny_arrays["x_train"]))
    before = _files(logdir)
    with pytest.raises(RunError) as refused:
        train(dataclasses.replace(config, data_dir=str(folder)))
    assert str(refused.value) == (
        f"--logdir {logdir} holds a run trained on other data (tiny MNIST cut of the bundled subset, 512 + 256 "
        f"images, SHA-256 7cd153065534) than this start's ({folder / 'mnist.npz'}, 512 + 256 images, SHA-256 "
        f"{data_lib.fingerprint(data_lib.load('mnist', str(folder)))['sha256'][:12]}); resume with the run's "
        f"data, pass --allow_config_change, or choose a new --logdir")
    assert _files(logdir) == before


def test_allow_config_change_resumes_on_other_data_and_records_the_change(finished_run, tmp_path, tiny_mnist):
    config, logdir = _copy(finished_run, tmp_path)
    other = _other_data(tiny_mnist)
    train(dataclasses.replace(config, allow_config_change=True), dataset=other)
    saved, new = _saved(logdir), data_lib.fingerprint(other)
    assert saved["data"] == new
    assert saved["history"][-1]["changed"] == {"train_steps": [BASE_STEPS, MORE_STEPS],
                                               "logdir": [finished_run.logdir, str(logdir)],
                                               "allow_config_change": [False, True],
                                               "data": [data_lib.fingerprint(tiny_mnist)["sha256"], new["sha256"]]}


def test_a_run_without_a_recorded_fingerprint_resumes_and_is_checked_from_then_on(finished_run, tmp_path,
                                                                                  tiny_mnist):
    config, logdir = _copy(finished_run, tmp_path)
    saved = _saved(logdir)
    del saved["data"]  # config.json as the code before fingerprints wrote it
    (logdir / "config.json").write_text(json.dumps(saved))
    assert train(config, dataset=tiny_mnist).results["train_steps"] == MORE_STEPS
    assert _saved(logdir)["data"] == data_lib.fingerprint(tiny_mnist)
    with pytest.raises(RunError, match=rf"^--logdir {logdir} holds a run trained on other data"):
        train(dataclasses.replace(config, train_steps=60), dataset=_other_data(tiny_mnist))


def test_a_run_without_config_json_is_refused_whatever_its_settings(finished_run, tmp_path, tiny_mnist):
    # Its checkpoints would resume under any settings, since nothing records what they were: a folder is a run
    # only by config.json's mark (training/rundir.py), so it is refused as any folder of other files is.
    config, logdir = _copy(finished_run, tmp_path)
    (logdir / "config.json").unlink()
    before = _files(logdir)
    with pytest.raises(RunError, match=rf"^--logdir {logdir} holds files that are not a run of training.train "
                                       rf"\(checkpoints, clock.json, eval, \.\.\.\); choose a new --logdir$"):
        train(dataclasses.replace(config, learning_rate=0.1), dataset=tiny_mnist)
    assert _files(logdir) == before


@pytest.mark.parametrize("damage", ["no_config", "history_not_a_list"])
def test_a_marked_config_json_without_its_parts_is_refused_in_one_line(finished_run, tmp_path, tiny_mnist, damage):
    config, logdir = _copy(finished_run, tmp_path)
    saved = json.loads((logdir / "config.json").read_text())
    if damage == "no_config":
        del saved["config"]  # before: read as a run of every default setting, and refused as "another" run
    else:
        saved["history"] = "x"  # before: a traceback when the start was appended
    (logdir / "config.json").write_text(json.dumps(saved))
    before = _files(logdir)
    expected = ("its config is a JSON NoneType, not an object" if damage == "no_config" else
                "its history is not a list of starts")
    with pytest.raises(RunError, match=re.escape(f"{logdir / 'config.json'}: {expected}; move the run directory away")):
        train(config, dataset=tiny_mnist)
    assert _files(logdir) == before


def test_a_checkpoints_entry_that_is_a_file_is_refused_in_one_line(finished_run, tmp_path, tiny_mnist):
    config, logdir = _copy(finished_run, tmp_path)
    shutil.rmtree(logdir / "checkpoints")
    (logdir / "checkpoints").write_text("not a folder\n")
    with pytest.raises(RunError, match=re.escape(f"{logdir / 'checkpoints'} is not a folder of checkpoints")):
        train(config, dataset=tiny_mnist)  # before: TensorFlow's FailedPreconditionError
    assert (logdir / "checkpoints").read_text() == "not a folder\n"
