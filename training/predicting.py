"""Use a trained run: top-k classes of image files (``predict_files``), accuracy on a split (``evaluate_split``).

Both need the run's export (see ``training/exporting.py``): its ``export.json`` says what the run's evaluation did
to images (the mean and std of a standardised run, the test-time augmentation). A run without one is refused with
a line saying how to export it: predicting writes nothing into a run directory but a split's confusion picture
under ``inspect/``, and exporting may need the run's training data, which predicting on a few images should not.

What computes the predictions (``load_predictor``): ``export/model.keras`` where the run has one, opened in Keras'
safe mode, which deserialises no code; else the run's network rebuilt by this code from its newest checkpoint that
restores (``training.trained_run``), as for a reference run. ``export/saved_model`` only when asked
(``allow_saved_model``): a SavedModel is a program, whose graph can read and write files, and loading one planted
in a run directory would run it. Either way the export must be of the run's dataset and network.

Images are fitted to the run's input before the network sees them, and each prediction says what was done:
an alpha channel is dropped, RGB becomes grey for a 1-channel run (``tf.image.rgb_to_grayscale``) and grey
becomes RGB for a 3-channel one, and an image of another size is resized to the run's H x W (bilinear with
antialiasing, aspect ratio not kept).

An image whose mean pixel lies on the other side of mid-gray than the run's training images, for a dataset with a
dominant background (``looks_inverted``: a dark digit on white, for MNIST's light digits on black), is named in one
warning (``inverted_warning``); a run trained with label smoothing is told to cap its probabilities
(``smoothing_note``). ``write_confusion_picture`` draws a split's confusion matrix into ``<run>/inspect/``.
"""

import dataclasses
import math
import os
import zipfile

import numpy as np
import tensorflow as tf
from absl import logging

from models import architecture
from training import data as data_lib
from training import exporting, pipeline, run_files, trained_run
from training.choices import TTA_MODES
from training.dataset_info import SPLITS, describe
from training.errors import OneLineError, first_line
from training.rundir import CHECKPOINTS, checkpoint_prefixes

BATCH_SIZE = 500  # images per call of the model
NPZ_KEYS = ("x_test", "x")  # the array of an .npz that is predicted: the first of these it holds
# Largest array of images an .npz may declare: 2 GiB is 2.7 million MNIST or 700,000 CIFAR images, well past
# what one command predicts; a larger header is a corrupt or hostile file, refused before any allocation.
MAX_INPUT_BYTES = 2**31
CLASSES_SHOWN = 5  # classes and mistakes a split evaluation prints, worst first

# The mean pixel, on the [0, 1] scale and over channels, of each dataset's full training set (CIFAR: the mean of
# the well-known per-channel means (0.4914, 0.4822, 0.4465) and (0.5071, 0.4865, 0.4409)). A standardised run's
# export records its own training images' mean, which is used instead.
TRAINING_MEANS = {"mnist": 0.1307, "fashion_mnist": 0.2860, "cifar10": 0.4734, "cifar100": 0.4782}
# The inversion rule: when the training images' mean pixel is at least DOMINANT_BACKGROUND from mid-gray (a
# background of one shade: MNIST 0.13, Fashion-MNIST 0.29; not CIFAR's 0.47), an input whose mean pixel lies past
# mid-gray on the other side (MNIST: above 0.5; a dark digit on white has about 0.87) looks inverted.
MID_GRAY = 0.5
DOMINANT_BACKGROUND = 0.15
INVERTED_NAMED = 3  # images the warning names; it counts the rest


class PredictError(OneLineError, ValueError):
    """Images or an export that cannot be used (no export, a file that is not an image); the message says why."""


@dataclasses.dataclass(frozen=True)
class Predictor:
    """What makes a run's predictions, and what is needed to read its outputs."""

    config: object  # the run's TrainConfig
    info: object  # the run's DatasetInfo (trained_run.run_info)
    serve: object  # fn(images=uint8 (n, H, W, C)) -> {"probabilities": (n, classes), "class_ids": (n,)}
    class_names: tuple
    source: str  # what computes the predictions: model.keras, the run's checkpoint, or the SavedModel
    checkpoint: str  # the checkpoint whose weights make them
    model: object  # what was loaded; kept, as ``serve`` reads its variables
    training_mean: float = None  # mean pixel of the run's training images on [0, 1] (``training_mean``)


@dataclasses.dataclass(frozen=True)
class Images:
    names: tuple  # one per image: its file, or "<file>.npz[i]"
    pixels: np.ndarray  # uint8 (n, H, W, C), fitted to the run's input
    changes: tuple  # one per image: what fitting did, e.g. ("RGB -> grey", "resized 56x56 -> 28x28"), or ()


@dataclasses.dataclass(frozen=True)
class Prediction:
    name: str
    top: tuple  # ((class name, probability), ...), most probable first
    changes: tuple  # what was done to the image to fit the run's input
    mean_pixel: float = None  # of the fitted image, on [0, 1]
    training_mean: float = None  # of the run's training images, on [0, 1]

    @property
    def looks_inverted(self):
        return looks_inverted(self.mean_pixel, self.training_mean)


@dataclasses.dataclass(frozen=True)
class Evaluation:
    split: str
    correct: int
    total: int
    source: str  # where the images came from
    recorded: float  # the run's own test_accuracy from results.json, or None
    top5_correct: int = None  # images whose label is among the 5 most probable classes (10+ classes only)
    superclass_correct: int = None  # CIFAR-100: images whose predicted fine class lies in the right superclass
    per_class: tuple = ()  # (class name, correct, images of that class), in label order
    confusions: tuple = ()  # (true class name, predicted class name, images), most frequent first, mistakes only
    matrix: object = None  # int64 (classes, classes) counts, rows the true class (``confusion_matrix``)
    class_names: tuple = ()
    about: str = ""  # the run and the weights that predicted, for a picture's title
    other_data: str = ""  # a sentence when the images are not the data the run trained on (``other_data_note``)

    @property
    def accuracy(self):
        return self.correct / self.total


def predict_files(run_dir, paths, top_k=3, allow_saved_model=False):
    """One ``Prediction`` per image of ``paths`` (PNG, JPEG, GIF or BMP files; .npz files holding x_test or x),
    with the ``top_k`` most probable classes (at most the dataset's number of classes). Every file is read and
    checked before the model is loaded; ``allow_saved_model``: see ``load_predictor``."""
    config = trained_run.read_config(run_dir)
    images = read_images(paths, trained_run.run_info(run_dir, config).image_shape, config.image_fit)
    predictor = load_predictor(run_dir, allow_saved_model, config)
    probabilities, _ = run_model(predictor.serve, images.pixels)
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :top_k]
    means = images.pixels.mean(axis=(1, 2, 3)) / 255.0
    return [Prediction(name, tuple((predictor.class_names[c], float(p[c])) for c in row), changes, float(mean),
                       predictor.training_mean)
            for name, p, row, changes, mean in zip(images.names, probabilities, order, images.changes, means)]


def looks_inverted(mean_pixel, training_mean):
    """Whether an image of ``mean_pixel`` looks inverted relative to training images of ``training_mean`` (both
    on [0, 1]): the rule beside ``DOMINANT_BACKGROUND``."""
    if mean_pixel is None or training_mean is None or abs(training_mean - MID_GRAY) < DOMINANT_BACKGROUND:
        return False
    return (mean_pixel > MID_GRAY) != (training_mean > MID_GRAY)


def inverted_warning(predictions):
    """One line naming the ``predictions`` whose image ``looks_inverted``, or None when none does."""
    inverted = [p for p in predictions if p.looks_inverted]
    if not inverted:
        return None
    named = ", ".join(f"{p.name} ({p.mean_pixel:.2f})" for p in inverted[:INVERTED_NAMED])
    more = f" and {len(inverted) - INVERTED_NAMED} more" if len(inverted) > INVERTED_NAMED else ""
    side = "above" if inverted[0].training_mean < MID_GRAY else "below"
    return (f"{len(inverted)} of {len(predictions)} images look inverted relative to the run's training images "
            f"(mean pixel {side} {MID_GRAY}, theirs {inverted[0].training_mean:.2f}): {named}{more}; the "
            f"predictions of an inverted image (e.g. a dark digit on white) mean little")


def smoothing_note(config, num_classes=None):
    """A sentence on how label smoothing caps the run's probabilities over its ``num_classes`` (default: its
    built-in dataset's), or None when the run trained without."""
    smoothing = config.label_smoothing
    if not smoothing:
        return None
    classes = num_classes or describe(config.dataset).num_classes
    cap = 1 - smoothing + smoothing / classes  # the smoothed target of the true class, where the loss is lowest
    return (f"the run trained with label smoothing {smoothing:g}: its probabilities stay below about {cap:.2f} "
            f"(1 - {smoothing:g} + {smoothing:g}/{classes}, the smoothed target of the true class), so a top "
            f"probability near {cap:.2f} is full confidence")


def training_mean(config, record):
    """The mean pixel of the run's training images on [0, 1]: the export ``record``'s per-channel mean when the
    run standardised, else ``TRAINING_MEANS`` of its dataset."""
    if record.get("mean") is not None:
        return float(np.mean(record["mean"]))
    return TRAINING_MEANS.get(config.dataset)


def evaluate_split(run_dir, split="test", data_dir="", allow_saved_model=False):
    """The run's accuracy on ``split`` of its dataset, computed as ``load_predictor`` says, on images read from
    ``data_dir`` or the run's own ``data_dir`` (a folder given must hold the file); with neither, the Keras cache,
    then the bundled MNIST subset; never downloaded."""
    if split not in SPLITS:
        raise PredictError(f"unknown split '{split}'; choose one of {', '.join(SPLITS)}")
    predictor = load_predictor(run_dir, allow_saved_model)
    dataset = data_lib.load_for(predictor.config, data_dir, allow_download=False)
    probabilities, class_ids = run_model(predictor.serve, dataset.x_test)
    recorded = trained_run.read_results(run_dir).get("test_accuracy")
    top5 = superclass = None
    if probabilities.shape[1] >= 10:  # top-5 of fewer classes says little
        best5 = np.argsort(-probabilities, axis=1, kind="stable")[:, :5]
        top5 = int(np.sum(np.any(best5 == dataset.y_test[:, np.newaxis], axis=1)))
    if dataset.fine_to_coarse is not None:
        superclass = int(np.sum(dataset.fine_to_coarse[class_ids] == dataset.y_test_coarse))
    per_class, confusions = class_breakdown(dataset.y_test, class_ids, predictor.class_names)
    about = (f"run {os.path.basename(os.path.normpath(run_dir))}: arch {predictor.config.arch}, "
             f"{predictor.config.dataset}, weights of {os.path.basename(predictor.checkpoint or '?')}")
    return Evaluation(split, int(np.sum(class_ids == dataset.y_test)), len(dataset.y_test), dataset.source, recorded,
                      top5, superclass, per_class, confusions,
                      confusion_matrix(dataset.y_test, class_ids, len(predictor.class_names)), predictor.class_names,
                      about, other_data_note(run_files.read_saved(run_dir).get("data"), data_lib.fingerprint(dataset)))


def other_data_note(trained_on, loaded):
    """A sentence when ``loaded`` (``data.fingerprint`` of the images read) is not the data the run recorded in
    config.json (``trained_on``; a run of older code recorded none, and gets no sentence): its recorded accuracy
    is then of other images, and the test images may even be among those it trained on."""
    recorded = trained_on.get("sha256") if isinstance(trained_on, dict) else None
    if not isinstance(recorded, str) or recorded == loaded["sha256"]:
        return ""
    return (f"these images are not the data the run trained on ({trained_on.get('source', 'unknown source')}, "
            f"SHA-256 {recorded[:12]}; here SHA-256 {loaded['sha256'][:12]}): the accuracy it recorded is of other "
            "images")


def confusion_matrix(labels, predicted, num_classes):
    """int64 ``(num_classes, num_classes)``: images of true class ``t`` (row) predicted as ``p`` (column)."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (np.asarray(labels), np.asarray(predicted)), 1)
    return matrix


def class_breakdown(labels, predicted, class_names):
    """``(per_class, confusions)`` of integer ``labels`` and ``predicted`` classes: per class in label order
    ``(name, correct, images)``; and every (true, predicted) pair of a mistake as ``(true name, predicted name,
    images)``, most frequent first (ties in label order)."""
    num_classes = len(class_names)
    matrix = confusion_matrix(labels, predicted, num_classes)
    per_class = tuple((class_names[c], int(matrix[c, c]), int(matrix[c].sum())) for c in range(num_classes))
    mistakes = [(int(matrix[t, p]), t, p) for t in range(num_classes) for p in range(num_classes)
                if t != p and matrix[t, p]]
    mistakes.sort(key=lambda item: (-item[0], item[1], item[2]))
    return per_class, tuple((class_names[t], class_names[p], count) for count, t, p in mistakes)


def format_prediction(prediction):
    """``name (changes): class p, class p, ...``, one line."""
    changes = f" ({', '.join(prediction.changes)})" if prediction.changes else ""
    return f"{prediction.name}{changes}: " + ", ".join(f"{name} {p:.4f}" for name, p in prediction.top)


def format_evaluation(evaluation):
    recorded = "" if evaluation.recorded is None else f"; the run recorded {evaluation.recorded:.4f}"
    extra = ""
    if evaluation.top5_correct is not None:
        extra += f"; top-5 accuracy {evaluation.top5_correct / evaluation.total:.4f}"
    if evaluation.superclass_correct is not None:
        extra += f"; superclass accuracy of the fine predictions {evaluation.superclass_correct / evaluation.total:.4f}"
    lines = [f"{evaluation.split} accuracy {evaluation.accuracy:.4f} ({evaluation.correct}/{evaluation.total} "
             f"images of {evaluation.source}){recorded}{extra}"]
    if evaluation.other_data:
        lines.append(evaluation.other_data)
    present = [row for row in evaluation.per_class if row[2]]
    if present:
        worst = sorted(present, key=lambda row: row[1] / row[2])[:CLASSES_SHOWN]
        lines.append(f"lowest per-class accuracy ({len(worst)} of {len(present)} classes): " + ", ".join(
            f"{name} {correct / images:.4f} ({correct}/{images})" for name, correct, images in worst))
    if evaluation.confusions:
        shown = evaluation.confusions[:CLASSES_SHOWN]
        lines.append(f"most frequent mistakes, true -> predicted ({len(shown)} of {len(evaluation.confusions)} "
                     f"pairs): " + ", ".join(f"{true} -> {predicted} {images}" for true, predicted, images in shown))
    return "\n".join(lines)


def load_predictor(run_dir, allow_saved_model=False, config=None):
    """The run's ``Predictor``: its export's ``model.keras`` in Keras' safe mode where there is one, else the run's
    network rebuilt from its newest checkpoint that restores; with ``allow_saved_model``, the export's SavedModel
    instead (a program: only from a source the user trusts). ``PredictError`` when the run has no export, or one
    that cannot be loaded or is not of the run's dataset and network."""
    config = config or trained_run.read_config(run_dir)
    info = trained_run.run_info(run_dir, config)
    paths = exporting.export_paths(run_dir, config.impl)
    record = read_export_record(run_dir, config, paths.record, info)
    if allow_saved_model:
        predictor = _load_saved_model(paths.saved_model, config, info, record, _again(run_dir))
    elif paths.keras and os.path.lexists(paths.keras):
        predictor = _load_keras_file(paths.keras, config, info, record, _again(run_dir))
    else:  # no code from the export runs: this code rebuilds the network, with the weights of the run's checkpoint
        run = trained_run.TrainedRun.open(run_dir)
        predictor = _serving(config, info, run.network, record, f"the network rebuilt from {run.checkpoint}",
                             os.path.abspath(run.checkpoint))
    logging.info("predictions by %s", predictor.source)
    _warn_if_stale(run_dir, predictor.checkpoint)
    return predictor


def _again(run_dir):
    return f"export the run again: python3 -m training.export --run_dir={run_dir}"


def read_export_record(run_dir, config, path, info=None):
    """export.json at ``path``, checked against the run ``config`` (and its dataset's ``info``, default
    ``trained_run.run_info``): the same dataset, image shape and network, and usable statistics and test-time
    augmentation; ``PredictError`` naming what is wrong."""
    if not os.path.lexists(path):
        raise PredictError(f"{path} does not exist; export the run first: python3 -m training.export "
                           f"--run_dir={run_dir}")
    again = _again(run_dir)
    try:
        record = run_files.read_json(path)
    except (OSError, ValueError) as error:
        raise PredictError(f"{path}: cannot be read ({first_line(error)}); {again}") from None
    if not isinstance(record, dict):
        raise PredictError(f"{path}: holds a JSON {type(record).__name__}, not an export's record; {again}")
    info = info or trained_run.run_info(run_dir, config)
    shape = record.get("image_shape")
    if record.get("dataset") != config.dataset or shape != list(info.image_shape):
        raise PredictError(f"{path}: an export of {record.get('dataset')} images of shape {shape}, but the run "
                           f"trains on {config.dataset} images of shape {list(info.image_shape)}; {again}")
    if not _same_network(record.get("arch"), config.arch):
        raise PredictError(f"{path}: an export of the network {record.get('arch')}, but the run trained "
                           f"{config.arch}; {again}")
    if record.get("test_time_augmentation") not in TTA_MODES:
        raise PredictError(f"{path}: test_time_augmentation is {record.get('test_time_augmentation')!r}, not one "
                           f"of {', '.join(TTA_MODES)}; {again}")
    for key, lowest in (("mean", -math.inf), ("std", 0.0)):
        value = record.get(key)
        if config.standardize:
            usable = isinstance(value, list) and len(value) == info.channels and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and lowest < v < math.inf for v in value)
            expected = f"{info.channels} finite numbers" + (" > 0" if lowest == 0 else "")
        else:
            usable, expected = value is None, "null (the run did not standardise)"
        if not usable:
            raise PredictError(f"{path}: {key} is {value!r}, expected {expected}; {again}")
    return record


def _same_network(exported, trained):
    return isinstance(exported, str) and architecture.resolve(exported) == architecture.resolve(trained)


def _serving(config, info, network, record, source, checkpoint):
    """A ``Predictor`` of ``network`` with the run's evaluation around it, as the export recorded it."""
    stats = () if record["mean"] is None else (np.float32(record["mean"]), np.float32(record["std"]))
    module = exporting.ServingModule(network, pipeline.make_preprocess(*stats), info.image_shape,
                                     record["test_time_augmentation"])
    return Predictor(config, info, module.serve, trained_run.class_names(info), source, checkpoint, module,
                     training_mean(config, record))


def _load_keras_file(path, config, info, record, again):
    """``_serving`` around ``model.keras``, loaded in safe mode; refused unless it is the run's ``CNN``."""
    from models.keras_cnn import CNN

    try:
        model = exporting.load_keras_model(path)
    except Exception as error:  # noqa: BLE001  Keras raises anything from a damaged or hostile file
        raise PredictError(f"{path} cannot be loaded in Keras' safe mode ({first_line(error)}); {again}") from None
    if not isinstance(model, CNN):
        raise PredictError(f"{path} holds a {type(model).__name__}, not this project's CNN; {again}")
    if (tuple(model.image_shape), model.num_classes) != (info.image_shape, info.num_classes) \
            or not _same_network(model.arch, config.arch):
        raise PredictError(f"{path} holds the network {model.arch} on images {list(model.image_shape)} with "
                           f"{model.num_classes} classes, but the run trained {config.arch} on "
                           f"{list(info.image_shape)} with {info.num_classes}; {again}")
    return _serving(config, info, model, record, f"{path} (Keras safe mode)", record.get("checkpoint"))


def _load_saved_model(path, config, info, record, again):
    """The export's SavedModel, whose signature must take the run's images."""
    if not os.path.isdir(path):
        raise PredictError(f"{path} does not exist; {again}")
    try:
        model = tf.saved_model.load(path)
        serve = model.signatures[exporting.SIGNATURE]
        spec = serve.structured_input_signature[1]["images"]
    except (OSError, ValueError, KeyError, TypeError, tf.errors.OpError) as error:
        raise PredictError(f"{path} cannot be loaded ({first_line(error)}); {again}") from None
    image_shape = info.image_shape
    if spec.dtype != tf.uint8 or tuple(spec.shape[1:]) != image_shape:
        raise PredictError(f"{path} takes {spec.dtype.name} images of shape {tuple(spec.shape[1:])}, but the run's "
                           f"are uint8 {image_shape}; {again}")
    return Predictor(config, info, serve, trained_run.class_names(info), f"{path} (a SavedModel, as asked)",
                     record.get("checkpoint"), model, training_mean(config, record))


def run_model(serve, pixels):
    """``(probabilities, class_ids)`` of uint8 (n, H, W, C) ``pixels``, in batches of ``BATCH_SIZE``."""
    outputs = [serve(images=tf.constant(pixels[start:start + BATCH_SIZE]))
               for start in range(0, len(pixels), BATCH_SIZE)]
    return (np.concatenate([out["probabilities"].numpy() for out in outputs]),
            np.concatenate([out["class_ids"].numpy() for out in outputs]))


def read_images(paths, image_shape, image_fit="stretch"):
    """The images of ``paths`` fitted to ``image_shape`` (H, W, C) (``fit``, by ``image_fit``), as ``Images``;
    every file is read and checked before anything is predicted."""
    if not paths:
        raise PredictError("no images given; pass PNG or JPEG files, or .npz files holding x_test or x")
    names, pixels, changes = [], [], []
    for path in paths:
        if not os.path.isfile(path):
            raise PredictError(f"{path}: no such file")
        if path.lower().endswith(".npz"):
            batch = _read_npz(path)
            names += [f"{path}[{i}]" for i in range(len(batch))]
        else:
            batch = _decode(path)[np.newaxis]
            names.append(path)
        try:
            fitted, done = fit(batch, image_shape, image_fit)
        except ValueError as error:
            raise PredictError(f"{path}: {error}") from None
        pixels.append(fitted)
        changes += [done] * len(batch)
    return Images(tuple(names), np.concatenate(pixels), tuple(changes))


def fit(images, image_shape, image_fit="stretch"):
    """``(fitted, changes)``: uint8 (n, h, w, c) ``images`` as uint8 (n, H, W, C) for ``image_shape``, and what
    was done to them; another size is brought to H x W as a run's folder images were (``pipeline.fit_to_size``
    by ``image_fit``). ``ValueError`` for a channel count that cannot be converted."""
    height, width, channels = image_shape
    x, changes = tf.convert_to_tensor(images, tf.uint8), []
    if x.shape[-1] in (2, 4):  # grey + alpha, RGBA
        x, changes = x[..., :-1], changes + ["alpha dropped"]
    if x.shape[-1] == 3 and channels == 1:
        x, changes = tf.image.rgb_to_grayscale(x), changes + ["RGB -> grey"]
    elif x.shape[-1] == 1 and channels == 3:
        x, changes = tf.image.grayscale_to_rgb(x), changes + ["grey -> RGB"]
    elif x.shape[-1] != channels:
        raise ValueError(f"images with {images.shape[-1]} channels cannot be converted to the run's {channels}")
    rows, columns = x.shape[1:3]
    if (rows, columns) != (height, width):
        window = pipeline.crop_window(rows, columns, (height, width)) if image_fit == "crop" else (rows, columns)
        if window != (rows, columns):
            changes.append(f"cropped {rows}x{columns} -> {window[0]}x{window[1]}")
        changes.append(f"resized {window[0]}x{window[1]} -> {height}x{width}")
        x = pipeline.fit_to_size(x, (height, width), image_fit)
    return x.numpy(), tuple(changes)


def _decode(path):
    """A PNG, JPEG, GIF (first frame) or BMP file as uint8 (h, w, c)."""
    try:
        with open(path, "rb") as file:
            contents = file.read()
    except OSError as error:
        raise PredictError(f"{path}: cannot be read ({error.strerror})") from None
    try:
        return tf.io.decode_image(contents, expand_animations=False).numpy()
    except (tf.errors.InvalidArgumentError, ValueError) as error:
        raise PredictError(f"{path}: cannot be decoded as an image ({first_line(error)}); give PNG or JPEG files, "
                           f"or .npz files holding {' or '.join(NPZ_KEYS)}") from None


def _read_npz(path):
    """The first array of ``NPZ_KEYS`` in the .npz at ``path``, as uint8 (n, h, w, c); its header is checked
    (``data.check_npy_header``) before a byte of it is read."""
    try:
        with open(path, "rb") as file:
            if file.read(6) == b"\x93NUMPY":
                raise PredictError(f"{path}: holds a single .npy array, not an .npz archive of "
                                   f"{' or '.join(NPZ_KEYS)}; save it with numpy.savez(path, x=images)")
            file.seek(0)
            with zipfile.ZipFile(file) as archive:
                members = {member.filename[:-len(".npy")]: member for member in archive.infolist()
                           if member.filename.endswith(".npy")}
                key = next((key for key in NPZ_KEYS if key in members), None)
                if key is None:
                    raise PredictError(f"{path}: holds neither {' nor '.join(NPZ_KEYS)} (its arrays: "
                                       f"{', '.join(members) or 'none'})")
                data_lib.check_npy_header(path, key, archive, members[key], MAX_INPUT_BYTES)
                with archive.open(members[key]) as array:
                    images = np.lib.format.read_array(array, allow_pickle=False)
    except PredictError:
        raise  # a ValueError, named already
    except data_lib.DataError as error:
        raise PredictError(str(error)) from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise PredictError(f"{path}: not a readable .npz file ({first_line(error)})") from None
    if images.dtype != np.uint8:
        raise PredictError(f"{path}: {key} has dtype {images.dtype}, expected uint8 pixels in [0, 255]")
    if images.ndim == 3:
        images = images[..., np.newaxis]  # (n, h, w) grey -> (n, h, w, 1)
    if images.ndim != 4 or not 1 <= images.shape[-1] <= 4 or 0 in images.shape[:3]:
        raise PredictError(f"{path}: {key} has shape {images.shape}, expected images (n, H, W) or (n, H, W, C) with "
                           f"n, H and W > 0 and 1 to 4 channels")
    return images


def _warn_if_stale(run_dir, checkpoint):
    """A log line when the run has a newer checkpoint than ``checkpoint``, whose weights predict."""
    newest = checkpoint_prefixes(os.path.join(run_dir, CHECKPOINTS))
    if newest and os.path.abspath(newest[0]) != checkpoint:
        logging.warning("predicting with the weights of %s, but the run's newest checkpoint is %s; export the run "
                        "again to use it: python3 -m training.export --run_dir=%s", checkpoint, newest[0], run_dir)
