"""Your own images as a dataset: a folder of class folders, trained on with ``--dataset=folder --data_dir=PATH``.

``--data_dir`` names the folder, rather than ``--dataset=folder:<path>`` or a flag of its own, because it already
means "where this run's data is read from", with the properties a folder of images needs: a resumed run may give
another one (the folder moved, or mounted elsewhere) while the data fingerprint in config.json still refuses other
images, where a path inside ``--dataset``, a setting fixed for the life of a run, would refuse the same images at
a new path; and export and predict already take ``--data_dir`` to find a finished run's data elsewhere.

The layout is ``keras.utils.image_dataset_from_directory``'s, ``<data_dir>/<class name>/<image files>``:

- the classes are the folders directly in ``data_dir``; label i is the i-th name in sorted order, and the names
  are the class names that predictions print;
- a class's images are its files ending in .png, .jpg, .jpeg, .bmp or .gif (any case), in its subfolders too,
  in sorted path order; other files, and files and folders whose names start with a dot, are skipped;
- the test set is ``<data_dir>/test/`` when ``data_dir`` holds exactly the two folders ``train/`` and ``test/``,
  each with the same class folders; otherwise ``TEST_FRACTION`` of each class's images, chosen by a permutation
  fixed by ``TEST_SPLIT_SEED`` and the class's label (not by ``--seed``), so that every run on one folder tests on
  the same images and every class keeps its share of both splits. ``--validation_split`` then holds part of the
  training images out, as for the built-in datasets.

This module lists files and reads one image's header (Pillow reads the size and mode, no pixels), without
TensorFlow, so that the flags of a run can check a folder before TensorFlow is imported; ``data.py`` decodes the
images. A folder that cannot be a dataset is a ``FolderError`` whose one line names the folder or file.
"""

import dataclasses
import os
import re
import stat

from training.errors import DataDirError, first_line

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")  # image_dataset_from_directory's, read by tf.io
TRAIN, TEST = "train", "test"
TEST_FRACTION = 0.2  # of each class's images, held out as the test set when the folder has no test/
TEST_SPLIT_SEED = 0  # fixed, not --seed: one test set for every run on a folder
# Pillow's DecompressionBombError message (PIL/Image.py, _decompression_bomb_check): "Image size (<pixels>
# pixels) exceeds limit of <limit> pixels, ...", the limit twice Image.MAX_IMAGE_PIXELS.
_TOO_MANY_PIXELS = re.compile(r"\((\d+) pixels\) exceeds limit of (\d+) pixels")


class FolderError(DataDirError):
    """A folder that cannot be read as a dataset of class folders; the message names the folder or file."""


@dataclasses.dataclass(frozen=True)
class Layout:
    """What a folder of class folders holds, before any pixel is read: files and labels of both splits."""

    root: str
    class_names: tuple
    train_files: tuple
    train_labels: tuple
    test_files: tuple
    test_labels: tuple
    split: str  # how the test set was made, for the data's source line

    @property
    def files(self):
        return self.train_files + self.test_files


def scan(root):
    """The ``Layout`` of the folder ``root`` (see the module docstring), or a ``FolderError`` saying what keeps
    it from being a dataset: not a folder, no class folders, no images, an empty class folder, a single class,
    a ``train/`` and ``test/`` pair whose classes differ, too few images to hold a test set out."""
    if not os.path.isdir(root):
        kind = "does not exist" if not os.path.lexists(root) else "is not a folder"
        raise FolderError(f"{root} {kind}; --dataset=folder reads a folder of class folders, one per class, "
                          "each holding that class's images")
    folders = _subfolders(root)
    if {TRAIN, TEST} <= set(folders):
        others = sorted(set(folders) - {TRAIN, TEST})
        if others:
            raise FolderError(f"{root} holds train/ and test/ beside other folders ({', '.join(others)}); keep only "
                              "train/ and test/ (each with one folder per class), or only class folders")
        train = _classes(os.path.join(root, TRAIN))
        test = _classes(os.path.join(root, TEST))
        if list(train) != list(test):
            raise FolderError(f"{root}: train/ and test/ hold different class folders ({_difference(train, test)}); "
                              "give both the same ones")
        names = tuple(train)
        train_files, train_labels = _labelled(train)
        test_files, test_labels = _labelled(test)
        split = "its train/ and test/ folders"
    else:
        classes = _classes(root)
        names = tuple(classes)
        train_files, train_labels, test_files, test_labels = _hold_out(root, classes)
        split = f"{TEST_FRACTION:.0%} of each class held out for testing, split seed {TEST_SPLIT_SEED}"
    return Layout(root, names, train_files, train_labels, test_files, test_labels, split)


def _subfolders(root):
    """Names of the folders directly in ``root`` (links to folders included), sorted, without hidden ones."""
    return [entry.name for entry in _sorted_entries(root) if not entry.name.startswith(".") and entry.is_dir()]


def _sorted_entries(folder):
    """An iterator over the entries of ``folder`` in name order, or a ``FolderError`` when it cannot be listed."""
    try:
        return iter(sorted(os.scandir(folder), key=lambda entry: entry.name))
    except OSError as error:
        raise FolderError(f"{folder}: cannot be listed ({error.strerror})") from None


def _classes(root):
    """``{class name: image paths}`` of the class folders in ``root``, in sorted order; every class has images,
    and there are at least two."""
    names = _subfolders(root)
    if not names:
        loose = _images_in(root, recursive=False)[0]
        where = (f" but {len(loose)} image{'s' * (len(loose) > 1)} directly in it ({os.path.basename(loose[0])}, "
                 "...); put each class's images in a folder named after the class" if loose else "")
        raise FolderError(f"{root} holds no class folders{where}; --dataset=folder reads one folder per class, each "
                          "holding that class's images")
    classes = {name: _images_in(os.path.join(root, name)) for name in names}
    if not any(images for images, _ in classes.values()):
        raise FolderError(f"{root}: no images in any of its {len(names)} class folders (files ending in "
                          f"{', '.join(IMAGE_EXTENSIONS)})")
    for name, (images, skipped) in classes.items():
        if not images:
            others = f" (only {skipped} other files)" if skipped else ""
            raise FolderError(f"{os.path.join(root, name)}: an empty class folder, no images{others}; add images "
                              f"(files ending in {', '.join(IMAGE_EXTENSIONS)}) or remove the folder")
    if len(names) == 1:
        raise FolderError(f"{root} holds a single class folder ({names[0]}); a classifier needs at least two classes, "
                          "one folder each")
    return {name: images for name, (images, _) in classes.items()}


def _images_in(folder, recursive=True):
    """``(image paths, files skipped)`` in ``folder`` (and its subfolders when ``recursive``), in sorted order.

    Links to files are followed, links to folders inside a class folder are not (as os.walk by default). A path
    with an image's ending that is no regular file (a named pipe, a device) is refused: reading it could block
    or never end.
    """
    images, skipped = [], 0
    # The folders being listed, innermost last, each as an iterator over its remaining entries: a depth-first walk
    # in the order of a recursive one, without recursion, so that folders nested deeper than Python's recursion
    # limit (1,000 frames by default) are walked too.
    listing = [_sorted_entries(folder)]
    while listing:
        entry = next(listing[-1], None)
        if entry is None:
            listing.pop()
        elif entry.name.startswith("."):
            continue
        elif entry.is_dir(follow_symlinks=False):
            if recursive:
                listing.append(_sorted_entries(entry.path))
        elif entry.name.lower().endswith(IMAGE_EXTENSIONS):
            if not _is_regular(entry.path):
                raise FolderError(f"{entry.path}: not a regular file; an image folder holds image files")
            images.append(entry.path)
        else:
            skipped += 1
    return images, skipped


def _is_regular(path):
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False  # a dangling link


def _difference(first, second):
    only_first, only_second = sorted(set(first) - set(second)), sorted(set(second) - set(first))
    parts = ([f"only in train/: {', '.join(only_first)}"] if only_first else []) + (
        [f"only in test/: {', '.join(only_second)}"] if only_second else [])
    return "; ".join(parts)


def _labelled(classes):
    """``(paths, labels)`` of every image of ``classes``, class by class."""
    files, labels = [], []
    for label, images in enumerate(classes.values()):
        files += images
        labels += [label] * len(images)
    return tuple(files), tuple(labels)


def _hold_out(root, classes):
    """``(train files, train labels, test files, test labels)``: ``round(TEST_FRACTION * n)`` of each class's
    ``n`` images for testing, by a permutation seeded with (``TEST_SPLIT_SEED``, label), so that adding images
    to one class leaves the other classes' splits as they were; both splits keep the sorted file order."""
    import numpy as np  # here: every command's flags import this module, and most never split a folder

    train, test = ([], []), ([], [])
    for label, images in enumerate(classes.values()):
        held = set(np.random.default_rng([TEST_SPLIT_SEED, label]).permutation(len(images))[
            :round(TEST_FRACTION * len(images))].tolist())
        for index, path in enumerate(images):
            split = test if index in held else train
            split[0].append(path)
            split[1].append(label)
    if not test[0]:
        raise FolderError(f"{root}: too few images to hold {TEST_FRACTION:.0%} of each class out for testing "
                          f"({sum(map(len, classes.values()))} in all); add images, or give train/ and test/ "
                          "folders")
    return tuple(train[0]), tuple(train[1]), tuple(test[0]), tuple(test[1])


def image_header(path, name=None):
    """``(height, width, channels)`` of the image file ``path`` (a path, or a binary file object that ``name``
    names in messages) as ``tf.io.decode_image`` decodes it, less an alpha channel (``data.py`` drops it), read
    from its header only."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            (width, height), mode, kind = image.size, image.mode, image.format
            bands = len(image.getbands())
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as error:
        raise FolderError(f"{name or path}: cannot be read as an image ({_why_pillow_failed(error)})") from None
    if kind == "GIF" or mode in ("P", "PA"):
        channels = 3  # TensorFlow decodes GIFs and palette PNGs to RGB
    else:
        channels = bands - 1 if bands in (2, 4) else bands  # grey or RGB, each with or without alpha
    return height, width, channels


def why_undecodable(path):
    """Why the file ``path`` (a path, or a binary file object), which TensorFlow could not decode, is no image, in
    Pillow's words (it decodes the file in full): what a one-line error quotes, so that no failing TensorFlow op
    has to run just to say it."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
            kind = image.format
    except Exception as error:  # noqa: BLE001  Pillow raises anything from a damaged file
        if isinstance(path, (str, bytes, os.PathLike)):
            return _why_pillow_failed(error)
        return _why_pillow_failed(error).replace(f" {path!r}", "")  # a file object's repr says nothing but an address
    return f"it is {kind or 'an image'} to Pillow, but not a PNG, JPEG, BMP or GIF that TensorFlow decodes"


def _why_pillow_failed(error):
    """What a one-line error quotes of the ``error`` Pillow raised opening or decoding an image: its first line, or
    for a header declaring more pixels than Pillow opens (``DecompressionBombError``), the count and the limit.

    Pillow raises that error before it gives the image's size, so the count is read from its message; a message
    worded otherwise is quoted as it is."""
    from PIL import Image

    counts = _TOO_MANY_PIXELS.search(str(error)) if isinstance(error, Image.DecompressionBombError) else None
    if not counts:
        return first_line(error)
    pixels, limit = map(int, counts.groups())
    return (f"its header declares {pixels:,} pixels, more than Pillow's limit of {limit:,}: a damaged file or a "
            "decompression bomb")
