"""What a run tells a person while it trains and after: console lines on a clock, default evaluations, and the
TensorBoard summaries beside the scalars (learning rate per chunk, validation, hparams, confusion matrix).

The command line's own console (short prefix, closing summary, Ctrl-C) is tested in tests/test_console.py.
"""

import dataclasses
import logging
import re

import numpy as np
import pytest

from tests.event_files import has_graph, read_images, read_scalars
from training import data as data_lib
from training import progress
from training.config import TrainConfig
from training.progress import Bookkeeper
from training.trainer import resolve_eval_every, train

# Evaluating the same weights on the same images twice: identical up to float32 rounding.
SAME_WEIGHTS_ATOL = 1e-6


def test_a_slow_chunk_gets_a_progress_line_whatever_log_every_says(tmp_path, tiny_config, tiny_mnist, caplog,
                                                                   monkeypatch):
    # 20 steps in calls of 5 (no time limit); log_every beyond the run: its only log line is the last step's.
    # The console's clock stands still except around the chunk ending at step 15, which "takes" 31 s.
    now = [0.0]
    monkeypatch.setattr(progress, "monotonic", lambda: now[0])
    after_steps = Bookkeeper.after_steps

    def slow_at_15(book, begin, end, *args):
        if end == 15:
            now[0] += progress.PROGRESS_SECONDS + 1
        return after_steps(book, begin, end, *args)

    monkeypatch.setattr(Bookkeeper, "after_steps", slow_at_15)
    caplog.set_level(logging.INFO, logger="absl")
    train(tiny_config(tmp_path, log_every=1000, steps_per_loop=5, max_seconds_per_loop=0, eval_every=1000),
          dataset=tiny_mnist)
    lines = [record.getMessage() for record in caplog.records if record.pathname.endswith("progress.py")]
    # 512 training images in batches of 64: 8 steps an epoch.
    assert lines[0] == (f"{tmp_path}: new run; 20 steps = 2.5 epochs of 8 steps (batch 64); evaluating at the end "
                        "(256 test images)")
    # The first timed call (steps 6-10): what compiling took, a step's time, the time left.
    assert re.fullmatch(r"step 10/20 \(epoch 1\.2/2\.5\): compiling took \d+\.\d s; then [\d.]+ m?s a step, [\d,]+ "
                        r"images/s, 0:\d\d left", lines[1]), lines
    progress_lines = [line for line in lines if re.match(r"step \d+/20 ", line)]
    assert [line.split(" (")[0] for line in progress_lines] == ["step 10/20", "step 15/20", "step 20/20"]
    assert re.fullmatch(r"step 15/20 \(epoch 1\.9/2\.5\): loss \d\.\d{4}, lr 0\.001, [\d,]+ images/s, 0:\d\d left",
                        progress_lines[1]), progress_lines


def test_a_run_asking_for_no_evaluations_gets_one_about_every_epoch_where_that_is_cheap():
    def every(num_train, num_test, **settings):
        return resolve_eval_every(TrainConfig(**settings), num_train, num_test)

    # Full MNIST at batch 128: 468 steps an epoch, an evaluation 10,000 / (3 x 59,904) = 5.6% of one.
    assert every(60_000, 10_000) == 468
    # The bundled subset (10,000 training images, 78 steps): 10,000 / (3 x 9,984) = 33% of an epoch, so 4 epochs.
    assert every(10_000, 10_000) == 4 * 78
    # CIFAR-10 at batch 1,024 with six test-time views: 60,000 / (3 x 49,152) = 41%, so 5 epochs of 48 steps.
    assert every(50_000, 10_000, batch_size=1024, test_time_augmentation="flip_translate") == 5 * 48
    # Asked for, they are as asked; with a target accuracy, whose time depends on them, none are added.
    assert every(60_000, 10_000, eval_every=7) == 7
    assert every(60_000, 10_000, eval_every_epochs=0.5) == 234
    assert every(60_000, 10_000, target_accuracy=0.99) == 0


@pytest.fixture(scope="module")
def reported_run(tmp_path_factory, tiny_arrays):
    """A run with a validation split that asks for no evaluations, on 32 test images: evaluating 32 test and 64
    validation images costs 96 / (3 x 448) = 7% of an epoch of 7 steps, so it is evaluated at steps 7 and 14."""
    arrays = dict(tiny_arrays, x_test=tiny_arrays["x_test"][:32], y_test=tiny_arrays["y_test"][:32])
    dataset = data_lib._validated("mnist", arrays, "tiny MNIST", source="tiny MNIST, 32 test images")
    logdir = tmp_path_factory.mktemp("reported") / "run"
    config = TrainConfig(arch="c4k3-m2-d16", batch_size=64, train_steps=14, log_every=10, steps_per_loop=10,
                         max_seconds_per_loop=0, validation_split=0.125, eval_batch_size=64, allow_download=False,
                         deterministic=True, logdir=str(logdir))
    counted = []
    with pytest.MonkeyPatch.context() as patch:
        image = progress.confusion_image
        patch.setattr(progress, "confusion_image", lambda counts: counted.append(counts) or image(counts))
        results = train(config, dataset=dataset).results
    return dict(logdir=logdir, config=config, results=results, counted=counted)


def test_evaluations_write_test_and_validation_scalars_and_a_confusion_matrix(reported_run):
    logdir, results = reported_run["logdir"], reported_run["results"]
    evaluated = read_scalars(logdir / "eval")
    validated = read_scalars(logdir / "validation")
    assert {tag: sorted(steps) for tag, steps in validated.items()} == {"loss": [7, 14], "accuracy": [7, 14]}
    assert sorted(evaluated["accuracy"]) == [7, 14]
    assert validated["accuracy"][14] == pytest.approx(results["validation_accuracy"], abs=SAME_WEIGHTS_ATOL)
    # The rate the next update uses, at every chunk's end: calls end at the evaluation (7) and the log (10).
    assert sorted(read_scalars(logdir / "train")["learning_rate"]) == [7, 10, 14]
    # The first call's trace of the train step, for the Graphs tab.
    assert has_graph(logdir / "train") and not has_graph(logdir / "eval")
    # 10 classes of 19-pixel cells and a 1-pixel grid: 191 pixels a side, in colour.
    assert read_images(logdir / "eval") == {"confusion_matrix": {7: (191, 191, 3), 14: (191, 191, 3)}}
    # The matrix counts each test image once, and its diagonal is the test accuracy.
    first, last = reported_run["counted"]
    assert first.sum() == last.sum() == 32
    assert np.trace(last) / 32 == pytest.approx(results["test_accuracy"], abs=SAME_WEIGHTS_ATOL)
    assert np.trace(first) / 32 == pytest.approx(evaluated["accuracy"][7], abs=SAME_WEIGHTS_ATOL)
    # results.json keeps the same curve, for plots made from committed files (TensorBoard's stay on the machine).
    curve = results["evaluations"]
    assert [(e["step"], e["images"]) for e in curve] == [(7, 448), (14, 896)]
    for record in curve:
        for tag, scalars, field in (("accuracy", evaluated, "test_accuracy"), ("loss", validated, "validation_loss"),
                                    ("accuracy", validated, "validation_accuracy")):
            assert record[field] == pytest.approx(scalars[tag][record["step"]], abs=SAME_WEIGHTS_ATOL), field


def test_a_plain_run_writes_its_recipe_as_hparams_without_the_seed(reported_run):
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.plugins.hparams import metadata

    accumulator = event_accumulator.EventAccumulator(str(reported_run["logdir"]),
                                                     size_guidance={event_accumulator.TENSORS: 0})
    accumulator.Reload()
    content = accumulator.PluginTagToContent(metadata.PLUGIN_NAME)[metadata.SESSION_START_INFO_TAG]
    start = metadata.parse_session_start_info_plugin_data(content)
    hparams = {name: getattr(value, value.WhichOneof("kind")) for name, value in start.hparams.items()}
    assert hparams["arch"] == "c4k3-m2-d16" and hparams["train_steps"] == 14
    assert hparams["learning_rate"] == pytest.approx(1e-3) and hparams["validation_split"] == pytest.approx(0.125)
    assert "seed" not in hparams and "logdir" not in hparams
    # The group is named by the hparams, so another seed of the recipe joins it.
    config = reported_run["config"]
    assert progress.recipe_hparams(dataclasses.replace(config, seed=7), 14) == progress.recipe_hparams(config, 14)
    assert start.group_name


def test_the_summary_names_validation_accuracy_when_there_is_one(reported_run):
    results = dict(reported_run["results"], wall_seconds=125.0, train_seconds=61.5, images_per_second=12345.6)
    first, second = progress.summary_lines(results, "runs/x/results.json")
    assert first == (f"test accuracy {100 * results['test_accuracy']:.2f}%, loss {results['test_loss']:.4f}; 14 "
                     "steps in 2:05 (1:01 training), 12,346 images/s")
    assert second == f"results: runs/x/results.json (validation accuracy {100 * results['validation_accuracy']:.2f}%)"


def test_a_recorded_learning_curve_is_read_back_only_when_whole_and_in_order():
    good = [[7, 2.1, 0.3, None, None], [14, 1.9, 0.45, None, None]]
    assert progress.valid_evaluations(good, 14) == good
    assert progress.valid_evaluations([], 14) == []
    for bad in ([[14, 1.9, 0.45, None, None], [7, 2.1, 0.3, None, None]],  # out of order
                [[21, 1.9, 0.45, None, None]],  # after the checkpoint it was recorded with
                [[7, "2.1", 0.3, None, None]], [[7.0, 2.1, 0.3, None, None]], [[7, 2.1, 0.3]], [{"step": 7}]):
        with pytest.raises((ValueError, TypeError)):
            progress.valid_evaluations(bad, 14)
    records = progress.evaluation_records(good, 64)
    assert records[1] == dict(step=14, images=896, test_loss=1.9, test_accuracy=0.45, validation_loss=None,
                              validation_accuracy=None)
    assert progress.evaluation_records(None, 64) is None  # restored from a record that kept no curve
