"""The run directory's owner: only the chief writes, config.json keeps a history, bad directories are refused."""

import json
import os

import pytest
import tensorflow as tf

from training.config import TrainConfig
from training.errors import RunError
from training.rundir import RunDir, stopped_message


def _write_everything(run_dir, config):
    """What a run writes through its RunDir, in order: config, a checkpoint, summaries, results."""
    run_dir.prepare(config, flagfile="--seed=0\n")
    step = tf.Variable(3, dtype=tf.int64)
    run_dir.checkpoint_manager(tf.train.Checkpoint(step=step)).save(checkpoint_number=3)
    for writer in run_dir.summary_writers().values():
        with writer.as_default(step=3):
            tf.summary.scalar("loss", 1.0)
        writer.flush()
    run_dir.write_results({"test_accuracy": 0.5})


def test_a_worker_that_is_not_the_chief_keeps_nothing(tmp_path):
    # The fit loop and the custom loop both write only through RunDir, so this holds for both.
    logdir = tmp_path / "run"
    config = TrainConfig(logdir=str(logdir))
    worker = RunDir(str(logdir), chief=False, worker_name="worker-1")
    _write_everything(worker, config)
    assert not logdir.exists()
    own = worker.own_dir
    assert os.path.basename(own).startswith("worker-1-") and os.listdir(os.path.join(own, "checkpoints"))
    worker.close()
    assert not os.path.exists(own)


def test_the_chief_writes_config_flags_checkpoints_summaries_and_results(tmp_path):
    config = TrainConfig(logdir=str(tmp_path))
    chief = RunDir(str(tmp_path))
    _write_everything(chief, config)
    chief.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoints", "config.json", "eval", "flags.txt",
                                                          "results.json", "train"]
    assert json.loads((tmp_path / "results.json").read_text()) == {"test_accuracy": 0.5}
    assert chief.read_config() == config


def test_a_config_json_of_older_code_without_history_is_read(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"arch": "c4k3-d8", "piecewise_boundaries": [0.5, 0.75],
                                                      "retired_field": 1}))
    config = RunDir(str(tmp_path)).read_config()
    assert (config.arch, config.piecewise_boundaries) == ("c4k3-d8", (0.5, 0.75))


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "holds no run configuration"),
])
def test_a_broken_config_json_is_refused_in_one_line(tmp_path, content, message):
    (tmp_path / "config.json").write_text(content)
    with pytest.raises(RunError, match=f"^{tmp_path}/config.json: {message}"):
        RunDir(str(tmp_path)).check(TrainConfig(logdir=str(tmp_path)))


def test_a_logdir_that_is_a_file_is_refused(tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(RunError, match=f"^--logdir {path} is a file, not a directory"):
        RunDir(str(path)).check(TrainConfig(logdir=str(path)))


def test_a_long_architecture_gets_a_short_default_run_directory():
    arch = "-".join(["c8k3"] * 60)  # 299 characters
    logdir = TrainConfig(arch=arch).logdir
    assert len(os.path.basename(logdir)) < 80 and logdir.startswith("runs/mnist-c8k3-c8k3")
    assert TrainConfig(arch=arch + "-d10").logdir != logdir  # the hash tells long strings apart
    assert TrainConfig().logdir == "runs/mnist-mnist_cnn-keras-custom"


def test_a_logdir_under_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    path = tmp_path / "file" / "run"
    with pytest.raises(RunError, match=f"^--logdir {path} cannot be created \\(Not a directory\\); choose a new "
                                       f"--logdir$"):
        RunDir(str(path)).lock()


def test_a_field_an_older_run_did_not_record_counts_as_its_default(tmp_path):
    # config.json of a run written before --decay_biases existed: that code decayed kernels only, the default.
    older = TrainConfig(logdir=str(tmp_path))
    run_dir = RunDir(str(tmp_path))
    run_dir.prepare(older)
    saved = json.loads((tmp_path / "config.json").read_text())
    del saved["config"]["decay_biases"]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    run_dir.check(older)  # the same computation: resumed
    with pytest.raises(RunError, match=r"holds a run with --decay_biases=False, not --decay_biases=True"):
        run_dir.check(TrainConfig(logdir=str(tmp_path), decay_biases=True))


def test_config_json_records_the_network_a_preset_name_stood_for(tmp_path):
    RunDir(str(tmp_path)).prepare(TrainConfig(arch="mnist_fast", logdir=str(tmp_path)))
    saved = json.loads((tmp_path / "config.json").read_text())
    assert (saved["config"]["arch"], saved["network"]) == ("mnist_fast", "c24k5s2b-c48k5s2b-d128")


def _as_if_trained_as(tmp_path, network):
    """config.json of a run of preset mnist_fast whose definition was ``network`` when it trained."""
    RunDir(str(tmp_path)).prepare(TrainConfig(arch="mnist_fast", logdir=str(tmp_path)))
    saved = json.loads((tmp_path / "config.json").read_text())
    saved["network"] = network
    (tmp_path / "config.json").write_text(json.dumps(saved))


def test_a_run_whose_preset_changed_meaning_resumes_only_as_the_network_it_trained(tmp_path):
    _as_if_trained_as(tmp_path, "c24k5s2b-d128")
    run_dir = RunDir(str(tmp_path))
    with pytest.raises(RunError, match=r"holds a run of the network c24k5s2b-d128, but --arch=mnist_fast is "
                                       r"c24k5s2b-c48k5s2b-d128; resume with --arch=c24k5s2b-d128"):
        run_dir.check(TrainConfig(arch="mnist_fast", logdir=str(tmp_path), allow_config_change=True))
    run_dir.check(TrainConfig(arch="c24k5s2b-d128", logdir=str(tmp_path)))  # the same network: not a change
    # Tools that read the run build the network it trained.
    assert run_dir.read_config().arch == "c24k5s2b-d128"


def test_a_preset_and_its_string_are_the_same_network_on_resume(tmp_path):
    RunDir(str(tmp_path)).prepare(TrainConfig(arch="mnist_fast", logdir=str(tmp_path)))
    RunDir(str(tmp_path)).check(TrainConfig(arch="c24k5s2b-c48k5s2b-d128", logdir=str(tmp_path)))
    with pytest.raises(RunError, match=r"holds a run of the network c24k5s2b-c48k5s2b-d128, but --arch=c8k3-d16"):
        RunDir(str(tmp_path)).check(TrainConfig(arch="c8k3-d16", logdir=str(tmp_path)))


def test_a_stopped_run_says_whether_it_kept_checkpoints(tmp_path):
    assert stopped_message(str(tmp_path)) == ("stopped by a signal before the run's first checkpoint; the same "
                                              "command starts it from step 0")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "ckpt-40.index").write_bytes(b"")
    assert stopped_message(str(tmp_path)) == (f"stopped by a signal; checkpoints already saved in {tmp_path} are "
                                              "kept, and the same command resumes from the last one")
