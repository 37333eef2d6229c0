"""Using a trained run: opening it (``training.trained_run``), its export (a SavedModel, and a .keras file for
Keras runs) and predictions from it.

Two tiny runs are trained and exported once for the module: a Keras one that standardises, with batch norm and
dropout, and a reference one that scales to [0, 1] and evaluates with flip+translate test-time augmentation. A
fresh Python process without this project on its path reloads both SavedModels. The commands that need no trained
run start before the runs train, the two that import TensorFlow (seconds each) together after. Predict makes its
predictions with model.keras (the Keras run) or with the network rebuilt from the run's checkpoint (the reference
run), never with a SavedModel unless asked.
"""

import dataclasses
import errno
import io
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import reference
from experiments import inspection
from models.keras_cnn import CNN
from training import config as config_lib
from training import data as data_lib
from training import exporting, pipeline, predicting, run_files, trained_run
from training.config import VALIDATION_SPLIT_SEED, TrainConfig
from training.loop import augmented_logits
from training.trained_run import EXPORT, INSPECT, TrainedRun, TrainedRunError
from training.trainer import train

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT_SECONDS = 180  # a subprocess imports TensorFlow: 3-10 s on a loaded 2-core machine
USAGE_ERROR = 2

# The run's test_accuracy is Keras' SparseCategoricalAccuracy, a float32 mean, so it equals the exact fraction of
# correct images only up to float32 rounding (6e-8 at 1.0): hence 1e-6. The SavedModel computes the same weights on
# the same images but in another graph, whose kernels may sum in another order; that moves logits by a few ulps,
# which flips an image only if its two best logits are that close: at most one image here.
ACCURACY_ATOL_IMAGES, ACCURACY_ATOL = 1, 1e-6
# Same float32 weights and ops on the same inputs; only the order of the sums inside the kernels (an eager call
# here, a traced graph in the SavedModel) may differ, by a few ulps of logits of order 1. Seen here: 0 for the
# .keras logits, 7e-8 for the SavedModel's probabilities.
LOGITS_ATOL = PROBABILITY_ATOL = 1e-6

RUNS = {
    "keras": {"impl": "keras", "arch": "c4k3b-m2-d16-drop0.5", "standardize": True},
    "reference": {"impl": "reference", "arch": "c4k3b-m2-d16", "test_time_augmentation": "flip_translate"},
}


@dataclasses.dataclass
class ExportedRun:
    run_dir: str
    result: object  # trainer.TrainResult: results.json's values and the trained network
    paths: exporting.ExportPaths


@pytest.fixture(scope="module")
def early_commands(tmp_path_factory):
    """The commands that need no trained run (usage errors, which stop before TensorFlow is imported), started at
    once so that they overlap the training of ``runs``: name -> Popen. ``fake_run`` holds a config.json and
    nothing else."""
    folder = tmp_path_factory.mktemp("early_commands")
    fake_run = folder / "fake_run"
    fake_run.mkdir()
    config = config_lib.as_json(TrainConfig(logdir=str(fake_run)))
    (fake_run / "config.json").write_text(json.dumps({"config": config, "history": []}))
    jobs = {
        "export_no_run": ["-m", "training.export", f"--run_dir={folder / 'no_such_run'}"],
        "export_no_flag": ["-m", "training.export"],
        "predict_nothing": ["-m", "training.predict", f"--run_dir={fake_run}"],
        "predict_help": ["-m", "training.predict", "--helpfull"],
    }
    processes = {name: _start(args, REPO_ROOT) for name, args in jobs.items()}
    yield folder, processes
    for process in processes.values():  # still running only when no test asked for its result
        if process.poll() is None:
            process.kill()
        process.communicate()


@pytest.fixture(scope="module")
def runs(early_commands, tmp_path_factory, tiny_mnist, tiny_mnist_dir, tiny_config):
    """Both runs trained (20 steps) on the tiny MNIST cut and exported with ``export_run``."""
    root = tmp_path_factory.mktemp("export_runs")
    made = {}
    for name, fields in RUNS.items():
        config = tiny_config(root / name, data_dir=str(tiny_mnist_dir), **fields)
        result = train(config, dataset=tiny_mnist)
        made[name] = ExportedRun(config.logdir, result, exporting.export_run(config.logdir))
    return made


def preprocessed(run, dataset, images):
    """``images`` as the run's evaluation saw them."""
    mean = std = None
    if RUNS[run].get("standardize", False):
        mean, std = pipeline.channel_stats(dataset.x_train)
    return pipeline.make_preprocess(mean, std)(tf.constant(images), None)[0]


@pytest.fixture(scope="module")
def run_logits(runs, tiny_mnist):
    """Each run's trained network's logits of the tiny test images, as its evaluation computed them (averaged
    over the views of its test-time augmentation), in this process."""
    return {name: augmented_logits(run.result.model, preprocessed(name, tiny_mnist, tiny_mnist.x_test),
                                   RUNS[name].get("test_time_augmentation", "none")).numpy()
            for name, run in runs.items()}


@pytest.fixture(scope="module")
def digit(runs, run_logits, tiny_mnist, tmp_path_factory):
    """A test digit the Keras run classifies right by its widest margin, as ``(label, png path, rgb 56x56 png)``."""
    logits, labels = run_logits["keras"], tiny_mnist.y_test
    top2 = np.sort(logits, axis=1)[:, -2:]
    margin = np.where(logits.argmax(axis=1) == labels, top2[:, 1] - top2[:, 0], -np.inf)
    index = int(margin.argmax())
    folder = tmp_path_factory.mktemp("digits")
    image = tiny_mnist.x_test[index]  # (28, 28, 1)
    grey, rgb = folder / "digit.png", folder / "digit_rgb_56.png"
    grey.write_bytes(tf.io.encode_png(image).numpy())
    big = np.kron(np.repeat(image, 3, axis=-1), np.ones((2, 2, 1), np.uint8))  # (56, 56, 3), each pixel 2x2
    rgb.write_bytes(tf.io.encode_png(big).numpy())
    return int(labels[index]), str(grey), str(rgb)


FRESH_PROCESS = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    try:
        import training.exporting  # noqa: F401
        project = True
    except ImportError:
        project = False
    images = np.load(sys.argv[1])
    out = {"project_importable": project}
    for name, path in zip(sys.argv[2::2], sys.argv[3::2]):
        loaded = tf.saved_model.load(path)
        serve = loaded.signatures["serving_default"]
        result = serve(images=tf.constant(images))
        out[name] = {
            "inputs": {key: [spec.dtype.name, spec.shape.as_list()]
                       for key, spec in serve.structured_input_signature[1].items()},
            "outputs": {key: [t.dtype.name, t.shape.as_list()] for key, t in result.items()},
            "probabilities": result["probabilities"].numpy().tolist(),
            "class_ids": result["class_ids"].numpy().tolist(),
        }
    print(json.dumps(out))
""")


def _start(args, cwd, clean_path=False):
    """``python3 *args`` started in ``cwd``; ``clean_path`` drops PYTHONPATH, so nothing of this project is found."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    if clean_path:
        env.pop("PYTHONPATH", None)
    return subprocess.Popen([sys.executable, *map(str, args)], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(process):
    """The ended ``process``: its exit status, stdout and stderr."""
    stdout, stderr = process.communicate(timeout=TIMEOUT_SECONDS)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.fixture(scope="module")
def usage_errors(early_commands):
    """The commands of ``early_commands``, ended: name -> CompletedProcess, and ``folder``."""
    early_folder, early = early_commands
    return {"folder": early_folder, **{name: _finish(process) for name, process in early.items()}}


@pytest.fixture(scope="module")
def commands(runs, digit, tiny_mnist, tmp_path_factory):
    """The two subprocesses that need the exported runs, started together and ended: name -> CompletedProcess.
    Each imports TensorFlow (seconds), hence the slow mark of the tests that read them."""
    folder = tmp_path_factory.mktemp("fresh_process")
    np.save(folder / "x_test.npy", tiny_mnist.x_test)
    saved_models = [item for name, run in runs.items() for item in (name, run.paths.saved_model)]
    late = {
        # cwd is a folder of its own and PYTHONPATH is dropped: only what is installed can be imported.
        "fresh": _start(["-c", FRESH_PROCESS, folder / "x_test.npy", *saved_models], folder, clean_path=True),
        "predict_png": _start(["-m", "training.predict", f"--run_dir={runs['keras'].run_dir}", "--top_k=2",
                               digit[1]], REPO_ROOT),
    }
    return {name: _finish(process) for name, process in late.items()}


@pytest.mark.slow
@pytest.mark.parametrize("name", RUNS)
def test_saved_model_alone_reproduces_the_run_in_a_fresh_process(name, runs, run_logits, commands, tiny_mnist):
    process = commands["fresh"]
    assert process.returncode == 0, process.stderr
    out = json.loads(process.stdout.strip().splitlines()[-1])
    assert out["project_importable"] is False  # the SavedModel needed nothing from this repository
    model = out[name]
    assert model["inputs"] == {"images": ["uint8", [None, 28, 28, 1]]}
    n = len(tiny_mnist.x_test)
    assert model["outputs"] == {"probabilities": ["float32", [n, 10]], "class_ids": ["int64", [n]]}
    # The preprocessing (and for the Keras run the training set's mean and std) is inside: uint8 in, the run's
    # softmax out.
    np.testing.assert_allclose(model["probabilities"], tf.nn.softmax(run_logits[name]).numpy(), rtol=0,
                               atol=PROBABILITY_ATOL)
    accuracy = np.mean(np.array(model["class_ids"]) == tiny_mnist.y_test)
    with open(os.path.join(runs[name].run_dir, "results.json")) as file:
        recorded = json.load(file)["test_accuracy"]
    assert abs(accuracy - recorded) <= ACCURACY_ATOL_IMAGES / n + ACCURACY_ATOL


def test_keras_file_reopens_with_the_run_logits(runs, run_logits, tiny_mnist):
    path = runs["keras"].paths.keras
    assert path.endswith(os.path.join("export", "model.keras"))
    model = keras.saving.load_model(path)  # the CNN class is registered as cnn_lab>CNN by the export
    assert isinstance(model, CNN)
    assert model.get_config()["arch"] == RUNS["keras"]["arch"]
    logits = model(preprocessed("keras", tiny_mnist, tiny_mnist.x_test), training=False).numpy()
    np.testing.assert_allclose(logits, run_logits["keras"], rtol=0, atol=LOGITS_ATOL)  # logits, not probabilities
    assert runs["reference"].paths.keras is None
    assert sorted(os.listdir(os.path.dirname(runs["reference"].paths.saved_model))) == ["export.json", "saved_model"]


def test_export_record_names_the_checkpoint_and_the_baked_in_statistics(runs, tiny_mnist, tiny_mnist_dir):
    with open(runs["keras"].paths.record) as file:
        keras_record = json.load(file)
    assert keras_record["checkpoint"] == os.path.join(os.path.abspath(runs["keras"].run_dir), "checkpoints",
                                                      "ckpt-20")
    assert keras_record["step"] == 20
    assert keras_record["class_names"] == [str(digit) for digit in range(10)]
    mean, std = pipeline.channel_stats(tiny_mnist.x_train)
    assert keras_record["mean"] == mean.tolist() and keras_record["std"] == std.tolist()
    # The statistics the run recorded as it trained (on the tiny cut passed to train()), not computed again.
    assert keras_record["stats_source"] == (f"{runs['keras'].run_dir}/preprocessing.json (recorded by the run, "
                                            f"from {tiny_mnist.source})")
    with open(runs["reference"].paths.record) as file:
        reference_record = json.load(file)
    assert (reference_record["mean"], reference_record["std"], reference_record["stats_source"]) == (None, None, None)
    assert reference_record["test_time_augmentation"] == "flip_translate"


@pytest.mark.slow
def test_predict_prints_the_digit_of_a_png(commands, digit):
    process = commands["predict_png"]
    assert process.returncode == 0, process.stderr
    label, png, _ = digit
    line, = process.stdout.splitlines()
    assert line.startswith(f"{png}: {label} ")
    assert len(line.split(": ", 1)[1].split(", ")) == 2  # --top_k=2


def test_predict_resizes_and_converts_rgb_to_grey(runs, digit, tiny_mnist, tmp_path):
    label, png, rgb_56 = digit
    npz = tmp_path / "three.npz"
    np.savez(npz, x=tiny_mnist.x_test[:3, :, :, 0])  # (n, H, W) without a channel axis
    grey, rgb, *from_npz = predicting.predict_files(runs["keras"].run_dir, [png, rgb_56, str(npz)], top_k=3)
    assert grey.changes == () and grey.top[0][0] == str(label)
    assert rgb.changes == ("RGB -> grey", "resized 56x56 -> 28x28")
    assert rgb.top[0][0] == str(label)
    assert [p.name for p in from_npz] == [f"{npz}[{i}]" for i in range(3)]
    assert all(len(p.top) == 3 and p.top[0][1] >= p.top[1][1] >= p.top[2][1] for p in from_npz)
    assert predicting.format_prediction(rgb).startswith(f"{rgb_56} (RGB -> grey, resized 56x56 -> 28x28): {label} ")


def test_fit_converts_channels_and_sizes_exactly_where_it_can():
    grey = np.arange(2 * 28 * 28, dtype=np.uint32).reshape(2, 28, 28, 1).astype(np.uint8)
    as_rgb, changes = predicting.fit(grey, (28, 28, 3))
    assert changes == ("grey -> RGB",) and as_rgb.shape == (2, 28, 28, 3)
    assert all(np.array_equal(as_rgb[..., c:c + 1], grey) for c in range(3))
    # (v, v, v) -> v: the luma weights sum to 0.9999 and the conversion back rounds.
    back, changes = predicting.fit(np.concatenate([as_rgb, np.full((2, 28, 28, 1), 255, np.uint8)], -1), (28, 28, 1))
    assert changes == ("alpha dropped", "RGB -> grey") and np.array_equal(back, grey)
    flat, changes = predicting.fit(np.full((1, 56, 40, 1), 77, np.uint8), (28, 28, 1))
    assert changes == ("resized 56x40 -> 28x28",) and flat.dtype == np.uint8 and np.all(flat == 77)
    with pytest.raises(ValueError, match="5 channels cannot be converted to the run's 1"):
        predicting.fit(np.zeros((1, 28, 28, 5), np.uint8), (28, 28, 1))


def test_evaluating_the_test_split_gives_the_run_accuracy(runs, tiny_mnist_dir):
    evaluation = predicting.evaluate_split(runs["keras"].run_dir, "test")  # the run's own data_dir
    recorded = runs["keras"].result.results["test_accuracy"]
    assert evaluation.total == 256 and evaluation.recorded == recorded
    assert abs(evaluation.accuracy - recorded) <= ACCURACY_ATOL_IMAGES / evaluation.total + ACCURACY_ATOL
    assert evaluation.source == str(tiny_mnist_dir / "mnist.npz")
    assert predicting.format_evaluation(evaluation).startswith(f"test accuracy {evaluation.accuracy:.4f} (")
    assert evaluation.other_data == ""  # the images the run trained on
    # Every test image is counted once per class, and every mistake once among the confusions.
    assert [name for name, _, _ in evaluation.per_class] == [str(digit) for digit in range(10)]
    assert sum(correct for _, correct, _ in evaluation.per_class) == evaluation.correct
    assert sum(images for _, _, images in evaluation.per_class) == evaluation.total
    assert sum(images for _, _, images in evaluation.confusions) == evaluation.total - evaluation.correct


def test_the_test_split_confusion_matrix_is_drawn_into_the_run_inspect_folder(runs):
    from experiments import visuals

    run_dir = runs["keras"].run_dir
    evaluation = predicting.evaluate_split(run_dir, "test")
    path = inspection.write_confusion_picture(run_dir, evaluation)
    assert path == os.path.join(run_dir, INSPECT, "confusion_test.png")
    with Image.open(path) as picture:
        size, text = picture.size, dict(picture.text)
    assert json.loads(text["classes"]) == [str(digit) for digit in range(10)] and text["split"] == "test"
    counts = np.array(json.loads(text["counts"]))  # rows the true class
    assert counts.sum() == evaluation.total and np.trace(counts) == evaluation.correct
    # Names "0".."9" (6 px) and a margin left of and above 10 cells of 32 px and a closing line: 10 + 321 = 331
    # px; under 2 title lines, over the colour bar's line and 1 caption line, with 4 margins.
    grid = 10 + 10 * visuals.CONFUSION_CELL_PIXELS + 1
    assert size[1] == 4 * visuals.MARGIN + 4 * visuals.LINE_PIXELS + grid and size[0] >= grid + 2 * visuals.MARGIN


def test_predict_warns_of_an_inverted_digit_and_explains_label_smoothing(runs, digit, tmp_path):
    label, png, _ = digit
    inverted = tmp_path / "inverted.png"
    inverted.write_bytes(tf.io.encode_png(255 - tf.io.decode_png(tf.io.read_file(png))).numpy())
    normal, dark_on_white = predicting.predict_files(runs["keras"].run_dir, [png, str(inverted)])
    assert not normal.looks_inverted and dark_on_white.looks_inverted
    assert predicting.inverted_warning([normal]) is None
    warning = predicting.inverted_warning([normal, dark_on_white])
    assert "\n" not in warning and warning.startswith("1 of 2 images look inverted relative to the run's training "
                                                      "images (mean pixel above 0.5, theirs 0.1")
    assert f"{inverted} ({dark_on_white.mean_pixel:.2f})" in warning and dark_on_white.mean_pixel > 0.5
    # CIFAR's training images have no background of one shade: a bright photo is no inverted one.
    assert not predicting.looks_inverted(0.9, predicting.TRAINING_MEANS["cifar10"])
    assert predicting.smoothing_note(TrainConfig(label_smoothing=0.0)) is None
    assert predicting.smoothing_note(TrainConfig(label_smoothing=0.1)).startswith(
        "the run trained with label smoothing 0.1: its probabilities stay below about 0.91 (1 - 0.1 + 0.1/10")


def test_the_class_breakdown_counts_each_class_and_orders_the_mistakes():
    labels, predicted = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2]), np.array([0, 1, 1, 1, 0, 2, 0, 1, 2])
    per_class, confusions = predicting.class_breakdown(labels, predicted, ("a", "b", "c"))
    assert per_class == (("a", 1, 3), ("b", 1, 2), ("c", 2, 4))
    assert confusions == (("a", "b", 2), ("b", "a", 1), ("c", "a", 1), ("c", "b", 1))  # ties in label order
    evaluation = predicting.Evaluation("test", 4, 9, "the file", None, per_class=per_class, confusions=confusions)
    assert predicting.format_evaluation(evaluation).splitlines() == [
        "test accuracy 0.4444 (4/9 images of the file)",
        "lowest per-class accuracy (3 of 3 classes): a 0.3333 (1/3), b 0.5000 (1/2), c 0.5000 (2/4)",
        "most frequent mistakes, true -> predicted (4 of 4 pairs): a -> b 2, b -> a 1, c -> a 1, c -> b 1"]


def test_the_test_split_evaluation_counts_top5_hits_and_has_no_superclasses_on_mnist(runs, run_logits, tiny_mnist):
    evaluation = predicting.evaluate_split(runs["keras"].run_dir, "test")
    best5 = np.argsort(-run_logits["keras"], axis=1)[:, :5]
    expected = int(np.sum(np.any(best5 == tiny_mnist.y_test[:, np.newaxis], axis=1)))
    assert abs(evaluation.top5_correct - expected) <= ACCURACY_ATOL_IMAGES
    assert evaluation.correct <= evaluation.top5_correct <= evaluation.total
    assert evaluation.superclass_correct is None  # MNIST has no superclasses
    line = predicting.format_evaluation(evaluation)
    assert f"top-5 accuracy {evaluation.top5_correct / evaluation.total:.4f}" in line and "superclass" not in line


def _npz_claiming(key, header):
    """An .npz whose array ``key`` has a version 1.0 .npy header of the text ``header`` and 8 bytes of data."""
    text = header.encode("latin1")
    text += b" " * (63 - (10 + len(text)) % 64) + b"\n"
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as npz:
        npz.writestr(f"{key}.npy", b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text + bytes(8))
    return archive.getvalue()


def _npy(array):
    out = io.BytesIO()
    np.save(out, array)
    return out.getvalue()


# 9,765,625,000,000 float64 values: 78e12 bytes, 71 TiB.
HUGE_HEADER = "{'descr': '<f8', 'fortran_order': False, 'shape': (9765625000000,), }"
BAD_FILES = {
    "notes.png": (b"not an image\n", "cannot be decoded as an image (Unknown image file format"),
    "empty.jpg": (b"", "cannot be decoded as an image ("),
    "labels.npz": ({"y": np.zeros(3, np.uint8)}, "holds neither x_test nor x (its arrays: y)"),
    "floats.npz": ({"x_test": np.zeros((2, 28, 28), np.float32)}, "x_test has dtype float32, expected uint8"),
    "flat.npz": ({"x": np.zeros((2, 784), np.uint8)}, "x has shape (2, 784), expected images"),
    "broken.npz": (b"PK\x03\x04 not really a zip", "not a readable .npz file ("),
    "single.npz": (_npy(np.zeros((2, 28, 28), np.uint8)), "holds a single .npy array, not an .npz archive of x_test "
                                                          "or x; save it with numpy.savez(path, x=images)"),
    "huge.npz": (_npz_claiming("x", HUGE_HEADER), "x declares shape (9765625000000,) of float64 (78,125,000,000,000 "
                                                  "bytes), but the archive stores only 8 bytes for it"),
    "no_pixels.npz": ({"x": np.zeros((2, 0, 0), np.uint8)}, "x has shape (2, 0, 0, 1), expected images (n, H, W) or "
                                                            "(n, H, W, C) with n, H and W > 0"),
    "no_images.npz": ({"x_test": np.zeros((0, 28, 28), np.uint8)}, "x_test has shape (0, 28, 28, 1), expected"),
}


@pytest.mark.parametrize("name", [*BAD_FILES, "missing.png"])
def test_a_file_that_is_not_an_image_is_refused_in_one_line(runs, tmp_path, name):
    path = tmp_path / name
    content, message = BAD_FILES.get(name, (None, "no such file"))
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        np.savez(path, **content)
    with pytest.raises(predicting.PredictError) as error:
        predicting.predict_files(runs["keras"].run_dir, [str(path)])
    assert str(error.value).startswith(f"{path}: {message}")
    assert "\n" not in str(error.value)


@pytest.fixture
def broken_runs(runs, tmp_path):
    """Copies of the Keras run, each broken in one way: name -> run directory."""

    def copy(name, edit=None, keep_checkpoints=True):
        # Without preprocessing.json, as a run of older code: its statistics come from its data again.
        target = tmp_path / name
        shutil.copytree(runs["keras"].run_dir, target, ignore=shutil.ignore_patterns(
            "export", "preprocessing.json", *(() if keep_checkpoints else ("checkpoints",))))
        if edit:
            saved = json.loads((target / "config.json").read_text())
            saved["config"].update(edit)
            (target / "config.json").write_text(json.dumps(saved))
        return str(target)

    empty_data = tmp_path / "empty_data"
    empty_data.mkdir()
    return {"no_checkpoint": copy("no_checkpoint", keep_checkpoints=False),
            "unknown_dataset": copy("unknown_dataset", {"dataset": "svhn"}),
            "data_gone": copy("data_gone", {"data_dir": str(empty_data)}), "empty_data": str(empty_data),
            "not_exported": copy("not_exported"), "missing": str(tmp_path / "no_such_run")}


def test_runs_that_cannot_be_exported_are_refused_in_one_line(broken_runs):
    run = broken_runs
    expected = {
        run["missing"]: f"run directory {run['missing']} does not exist",
        run["no_checkpoint"]:
            f"{run['no_checkpoint']}/checkpoints holds no checkpoint yet; wait for the run's first one",
        run["unknown_dataset"]: f"{run['unknown_dataset']}/config.json: setting dataset='svhn': --dataset must be one "
                                f"of mnist, fashion_mnist, cifar10, cifar100",
        run["data_gone"]: f"the run standardised its images with its training set's per-channel mean and std, but "
                          f"{run['empty_data']}/mnist.npz (the run's data_dir {run['empty_data']}) cannot be found; "
                          f"pass --data_dir=<folder holding mnist.npz>",
    }
    for run_dir, message in expected.items():
        with pytest.raises(TrainedRunError) as error:
            exporting.export_run(run_dir)
        assert str(error.value).startswith(message)
        assert "\n" not in str(error.value)
        assert not os.path.exists(os.path.join(run_dir, "export"))


def test_predict_refuses_a_run_without_export(broken_runs, digit):
    run_dir = broken_runs["not_exported"]
    with pytest.raises(predicting.PredictError, match=r"export/export.json does not exist; export the run first: "
                       r"python3 -m training.export --run_dir="):
        predicting.predict_files(run_dir, [digit[1]])


def test_export_predict_and_inspect_refuse_a_run_they_cannot_open_with_one_error(broken_runs, digit):
    from experiments import inspection

    run_dir = broken_runs["no_checkpoint"]
    message = f"^{re.escape(run_dir)}/checkpoints holds no checkpoint yet"
    for use in (exporting.export_run, inspection.inspect_run):
        with pytest.raises(TrainedRunError, match=message):
            use(run_dir)
    with pytest.raises(TrainedRunError, match=f"^run directory {re.escape(broken_runs['missing'])} does not exist$"):
        predicting.predict_files(broken_runs["missing"], [digit[1]])


def test_data_dir_flag_supplies_a_standardised_run_its_training_images(broken_runs, tiny_mnist_dir):
    paths = exporting.export_run(broken_runs["data_gone"], data_dir=str(tiny_mnist_dir))
    assert os.path.isdir(paths.saved_model) and os.path.isfile(paths.keras)


# Usage errors, each stopped before TensorFlow is imported. A file predict cannot read is refused in-process
# above; its one line reaches the console through flags.cli.run, as every entry point's errors do (checked end to
# end by the lone worker of tests/test_multiworker_faults.py).
COMMAND_FAILURES = {
    "export_no_run": (USAGE_ERROR, ("export.py: error: flag --run_dir={folder}/no_such_run: --run_dir must be an "
                                    "existing directory")),
    "export_no_flag": (USAGE_ERROR, ("export.py: error: flag --run_dir=None: Flag --run_dir must have a value "
                                     "other than None.")),
    "predict_nothing": (USAGE_ERROR, ("predict: error: give image files (PNG or JPEG, or .npz holding x_test or x) "
                                      "or --dataset_split=test, one of the two")),
}


@pytest.mark.parametrize("name", COMMAND_FAILURES)
def test_commands_fail_with_one_line(usage_errors, name):
    process = usage_errors[name]
    status, message = COMMAND_FAILURES[name]
    assert process.returncode == status, process.stderr
    assert "Traceback" not in process.stderr
    assert process.stderr.splitlines()[-1].startswith(message.format(folder=usage_errors["folder"]))
    assert process.stdout == ""


def test_predict_help_says_a_saved_model_is_a_program(usage_errors):
    process = usage_errors["predict_help"]
    assert "Traceback" not in process.stderr
    assert ("--[no]allow_saved_model: Predict with <run_dir>/export/saved_model instead. A SavedModel is a program: "
            "loading and calling it runs the TensorFlow graph it holds, which can read and write files "
            "(TensorFlow's SECURITY.md). Give this flag only for an export from a source you trust.") in " ".join(
                (process.stdout + process.stderr).split())


def test_opening_a_run_gives_its_restored_network_preprocessing_classes_and_folders(runs, tiny_mnist,
                                                                                    tiny_mnist_dir, tmp_path):
    run = TrainedRun.open(runs["keras"].run_dir)
    assert (run.step, os.path.basename(run.checkpoint)) == (20, "ckpt-20")
    trained = runs["keras"].result.model.named_weights()
    for name, variable in run.network.named_weights().items():
        np.testing.assert_array_equal(variable.numpy(), trained[name].numpy(), err_msg=name)
    mean, std = pipeline.channel_stats(tiny_mnist.x_train)
    stats = run.standardization  # recorded by the run: what training computed
    assert stats.mean.tolist() == mean.tolist() and stats.std.tolist() == std.tolist()
    assert stats.source == f"{run.path}/preprocessing.json (recorded by the run, from {tiny_mnist.source})"
    images = tiny_mnist.x_test[:4]
    np.testing.assert_array_equal(run.eval_preprocess()(tf.constant(images), None)[0],
                                  preprocessed("keras", tiny_mnist, images))
    assert run.class_names == tuple(map(str, range(10))) and run.info.image_shape == (28, 28, 1)
    assert run.subfolder(EXPORT) == os.path.join(run.path, "export")
    assert run.subfolder(INSPECT) == os.path.join(run.path, "inspect")
    # A run of older code (no preprocessing.json) gets them from its data again: the whole training set, or, when
    # it held out validation images, the rest of it.
    older = tmp_path / "older"
    shutil.copytree(run.path, older, ignore=shutil.ignore_patterns("export", "preprocessing.json"))
    again = TrainedRun.open(str(older)).standardization
    assert again.mean.tolist() == mean.tolist() and again.source == str(tiny_mnist_dir / "mnist.npz")
    held_out = TrainedRun.open(str(older))
    held_out = dataclasses.replace(held_out, config=dataclasses.replace(held_out.config, validation_split=0.25))
    rest = data_lib.split_validation(tiny_mnist, 0.25, VALIDATION_SPLIT_SEED)[0].x_train
    assert held_out.standardization.mean.tolist() == pipeline.channel_stats(rest)[0].tolist() != mean.tolist()
    other = TrainedRun.open(runs["reference"].run_dir)
    assert isinstance(other.network, reference.ReferenceCNN) and other.standardization is None
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "inspect").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(run_files.RunFileError, match=f"^{tmp_path}/inspect is a symbolic link"):
        trained_run.subfolder(str(tmp_path), INSPECT, create=True)


def test_a_second_export_under_way_is_refused_and_no_export_writes_through_a_planted_name(broken_runs, tmp_path):
    run_dir = broken_runs["not_exported"]
    folder = trained_run.subfolder(run_dir, EXPORT, create=True)
    with exporting.exclusive(folder, run_dir):  # as an export under way in another process holds it
        with pytest.raises(exporting.ExportError, match=f"^another export of {re.escape(run_dir)} is under way; wait "
                                                        "for it to end, then export again if need be$"):
            exporting.export_run(run_dir)
    assert os.listdir(folder) == []  # the refused export wrote nothing
    # A link where exports used to write their temporary copy, and the temporary folder of a killed export.
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("someone's file")
    os.symlink(victim, os.path.join(folder, "saved_model.tmp"))
    os.mkdir(os.path.join(folder, ".saved_model.k1ll3d.tmp"))
    paths = exporting.export_run(run_dir)
    assert os.listdir(victim) == ["keep.txt"] and os.path.islink(os.path.join(folder, "saved_model.tmp"))
    assert sorted(os.listdir(folder)) == ["export.json", "model.keras", "saved_model", "saved_model.tmp"]
    assert json.loads(open(paths.record).read())["step"] == 20


def test_predict_never_runs_a_planted_saved_model_unless_asked(runs, run_logits, tiny_mnist, tmp_path):
    run_dir = tmp_path / "reference"  # no model.keras: predictions come from the run's checkpoint
    shutil.copytree(runs["reference"].run_dir, run_dir)
    marker = tmp_path / "ran.txt"

    class Planted(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec((None, 28, 28, 1), tf.uint8, name="images")])
        def serve(self, images):
            tf.io.write_file(str(marker), "the planted SavedModel ran")  # a program may do anything
            count = tf.shape(images)[0]
            return {"probabilities": tf.fill([count, 10], 0.1), "class_ids": tf.zeros([count], tf.int64)}

    planted = Planted()
    saved_model = run_dir / "export" / "saved_model"
    shutil.rmtree(saved_model)
    tf.saved_model.save(planted, str(saved_model), signatures={"serving_default": planted.serve})
    npz = tmp_path / "x.npz"
    np.savez(npz, x_test=tiny_mnist.x_test)
    predictions = predicting.predict_files(str(run_dir), [str(npz)], top_k=1)
    assert not marker.exists()
    # The run's own network and evaluation (flip_translate test-time augmentation).
    np.testing.assert_allclose([p.top[0][1] for p in predictions],
                               tf.nn.softmax(run_logits["reference"]).numpy().max(axis=1), rtol=0,
                               atol=PROBABILITY_ATOL)
    asked = predicting.predict_files(str(run_dir), [str(npz)], top_k=1, allow_saved_model=True)
    assert marker.read_text() == "the planted SavedModel ran" and asked[0].top[0][1] == pytest.approx(0.1)


def test_predict_refuses_a_planted_keras_file_holding_code_in_one_line(runs, digit, tmp_path):
    run_dir = tmp_path / "keras"
    shutil.copytree(runs["keras"].run_dir, run_dir)
    keras_file = run_dir / "export" / "model.keras"
    keras_file.unlink()
    keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Lambda(lambda x: x * 2)]).save(keras_file)
    with pytest.raises(predicting.PredictError) as error:
        predicting.predict_files(str(run_dir), [digit[1]])
    assert str(error.value).startswith(f"{keras_file} cannot be loaded in Keras' safe mode (Requested the "
                                       "deserialization of a `Lambda` layer")
    assert str(error.value).endswith(f"; export the run again: python3 -m training.export --run_dir={run_dir}")
    assert "\n" not in str(error.value)


CIFAR10 = {"dataset": "cifar10", "image_shape": [32, 32, 3], "mean": [0.5] * 3, "std": [0.25] * 3}


@pytest.mark.parametrize("relabelled, allow_saved_model, message", [
    ((), False, "export/export.json: an export of mnist images of shape [28, 28, 1], but the run trains on cifar10 "
                "images of shape [32, 32, 3]; export the run again"),
    (tuple(CIFAR10), False, "export/model.keras holds the network c4k3b-m2-d16-drop0.5 on images [28, 28, 1] with "
                            "10 classes, but the run trained c4k3b-m2-d16-drop0.5 on [32, 32, 3] with 10; export the "
                            "run again"),
    (tuple(CIFAR10), True, "export/saved_model takes uint8 images of shape (28, 28, 1), but the run's are uint8 "
                           "(32, 32, 3); export the run again"),
], ids=["record", "keras_file", "saved_model"])
def test_an_export_of_another_dataset_is_refused_in_one_line(runs, digit, tmp_path, relabelled, allow_saved_model,
                                                             message):
    # A CIFAR-10 run whose export/ holds an MNIST run's export: images of another shape.
    run_dir = tmp_path / "run"
    shutil.copytree(runs["keras"].run_dir, run_dir)
    saved = json.loads((run_dir / "config.json").read_text())
    saved["config"]["dataset"] = "cifar10"
    (run_dir / "config.json").write_text(json.dumps(saved))
    record = json.loads((run_dir / "export" / "export.json").read_text())
    (run_dir / "export" / "export.json").write_text(json.dumps({**record, **{k: CIFAR10[k] for k in relabelled}}))
    with pytest.raises(predicting.PredictError) as error:
        predicting.predict_files(str(run_dir), [digit[1]], allow_saved_model=allow_saved_model)
    assert str(error.value).startswith(f"{run_dir}/{message}") and "\n" not in str(error.value)


def test_a_damaged_results_json_is_passed_over(runs, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(runs["keras"].run_dir, run_dir)
    (run_dir / "results.json").write_text("{")
    assert TrainedRun.open(str(run_dir)).standardization.std.shape == (1,)
    evaluation = predicting.evaluate_split(str(run_dir), "test")
    assert evaluation.recorded is None and evaluation.total == 256


def _files(folder):
    """Every file under ``folder`` with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(pathlib.Path(folder).rglob("*"))
            if p.is_file()}


def test_a_full_disk_during_an_export_stops_in_one_line_and_keeps_the_previous_export(runs, tmp_path,
                                                                                      monkeypatch):
    # Seen on a tmpfs with 150 KiB free: the SavedModel fitted and replaced the previous one, then model.keras
    # failed with a traceback (OSError), leaving a new SavedModel beside the old export.json; with 40 KiB free,
    # TensorFlow's SaveV2 failed with a traceback (ResourceExhaustedError). The writes fail so here.
    from tensorflow.python.ops import io_ops
    run_dir = tmp_path / "run"
    shutil.copytree(runs["keras"].run_dir, run_dir)
    before = _files(run_dir / EXPORT)
    no_space = os.strerror(errno.ENOSPC)
    expected = (f"cannot write {run_dir / EXPORT} ({no_space}): free space on its disk, then export again; the "
                f"previous export in {run_dir / EXPORT} is unchanged")
    with monkeypatch.context() as patch:
        patch.setattr(keras.Model, "save", lambda self, path: _raise(OSError(errno.ENOSPC, no_space)))
        with pytest.raises(run_files.RunFileError, match=f"^{re.escape(expected)}$"):
            exporting.export_run(str(run_dir))
    real_save = io_ops.save_v2

    def save_v2(prefix, *args):  # the variables' eager save fails; the save op traced into the graph is kept
        if not tf.executing_eagerly():
            return real_save(prefix, *args)
        raise tf.errors.ResourceExhaustedError(None, None, f"{prefix.numpy().decode()}.tempstate1; {no_space}")

    with monkeypatch.context() as patch:
        patch.setattr(io_ops, "save_v2", save_v2)
        with pytest.raises(run_files.RunFileError, match=f"^{re.escape(expected)}$"):
            exporting.export_run(str(run_dir))
    assert _files(run_dir / EXPORT) == before and os.listdir(run_dir / EXPORT) == os.listdir(
        runs["keras"].run_dir + "/export")  # no temporary folder left


def _raise(error):
    raise error


def test_no_picture_is_written_through_a_link_planted_in_inspect(runs, tmp_path):
    # Before: training.predict --dataset_split=test overwrote the link's target with its PNG.
    run_dir = tmp_path / "run"
    shutil.copytree(runs["keras"].run_dir, run_dir)
    (run_dir / INSPECT).mkdir(exist_ok=True)  # another test may have drawn the run's confusion matrix
    for name in ("confusion_test.png", "filters_conv1.png"):
        (run_dir / INSPECT / name).unlink(missing_ok=True)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (run_dir / INSPECT / "confusion_test.png").symlink_to(victim)
    (run_dir / INSPECT / "filters_conv1.png").symlink_to(victim)
    evaluation = predicting.Evaluation("test", 1, 2, "tiny", None, matrix=np.eye(10, dtype=np.int64),
                                       class_names=tuple("0123456789"))
    refused = "is a symbolic link (to {}); a picture is never written through a link: remove the link"
    with pytest.raises(run_files.RunFileError, match=re.escape(refused.format(victim))):
        inspection.write_confusion_picture(str(run_dir), evaluation)
    with pytest.raises(run_files.RunFileError, match=re.escape(refused.format(victim))):
        inspection.write_pictures(str(run_dir / INSPECT), {("filters", "conv1"): np.zeros((4, 4, 1), np.uint8)}, 20)
    assert victim.read_text() == "precious\n"


def test_an_evaluation_on_other_data_than_the_run_trained_on_says_so():
    trained_on = dict(sha256="a" * 64, source="/data/mnist.npz", images=[60000, 10000])
    assert predicting.other_data_note(trained_on, dict(trained_on, source="elsewhere/mnist.npz")) == ""
    assert predicting.other_data_note(None, dict(sha256="b" * 64)) == ""  # a run of code before fingerprints
    assert predicting.other_data_note(trained_on, dict(sha256="b" * 64)) == (
        "these images are not the data the run trained on (/data/mnist.npz, SHA-256 aaaaaaaaaaaa; here SHA-256 "
        "bbbbbbbbbbbb): the accuracy it recorded is of other images")
