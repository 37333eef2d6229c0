"""What a run's dataset is (image shape, classes, their names), without loading it: ``describe``.

The built-in datasets are rows of ``DATASETS``; the datasets of ``FROM_DISK`` are described from what ``--data_dir``
holds: ``folder``, a folder of class folders of the user's own images (``training/image_folder.py``), and ``tfds``,
an image classification dataset TensorFlow Datasets prepared there (``training/prepared_tfds.py``).
TensorFlow-free, so that flags and configs can name datasets before TensorFlow is imported; ``data.py`` loads them.
"""

import dataclasses

from training import image_folder, prepared_tfds


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a model and a report need to know of a dataset before loading it."""

    height: int
    width: int
    channels: int
    num_classes: int
    num_train: int  # images in the official training split
    num_test: int  # and in the official test split
    class_names: tuple = ()  # one per class, in label order; empty: the label number is the name
    coarse_class_names: tuple = ()  # superclasses (CIFAR-100's 20), in coarse label order; empty: none

    @property
    def image_shape(self):
        return (self.height, self.width, self.channels)

    @property
    def num_coarse_classes(self):
        return len(self.coarse_class_names)

    @property
    def image_bytes(self):
        """The official splits' images as uint8: what a data file holds, uncompressed, besides its labels."""
        return (self.num_train + self.num_test) * self.height * self.width * self.channels


_CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle", "bowl", "boy",
    "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock",
    "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish",
    "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange",
    "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine",
    "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk",
    "skyscraper", "snail", "snake", "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale",
    "willow_tree", "wolf", "woman", "worm",
)
_CIFAR100_SUPERCLASSES = (
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables", "household_electrical_devices",
    "household_furniture", "insects", "large_carnivores", "large_man-made_outdoor_things",
    "large_natural_outdoor_scenes", "large_omnivores_and_herbivores", "medium_mammals", "non-insect_invertebrates",
    "people", "reptiles", "small_mammals", "trees", "vehicles_1", "vehicles_2",
)

# The splits a trained run can be evaluated on (training.predict --dataset_split).
SPLITS = ("test",)

# Every dataset the loader knows, with its class names as the datasets' documentation gives them.
DATASETS = {
    "mnist": DatasetInfo(28, 28, 1, 10, 60_000, 10_000, tuple(str(digit) for digit in range(10))),
    "fashion_mnist": DatasetInfo(28, 28, 1, 10, 60_000, 10_000, (
        "T-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot")),
    "cifar10": DatasetInfo(32, 32, 3, 10, 50_000, 10_000, (
        "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")),
    "cifar100": DatasetInfo(32, 32, 3, 100, 50_000, 10_000, _CIFAR100_CLASSES, _CIFAR100_SUPERCLASSES),
}


def _describe_folder(data_dir, image_size, image_channels, tfds_name):
    """A folder of class folders as ``image_folder.scan`` finds it, its image shape that of its first image."""
    del tfds_name
    layout = image_folder.scan(data_dir)
    height, width, channels = image_folder.image_header(layout.train_files[0])
    if image_size:
        height, width = image_size
    return DatasetInfo(height, width, image_channels or channels, len(layout.class_names), len(layout.train_files),
                       len(layout.test_files), layout.class_names)


def _describe_tfds(data_dir, image_size, image_channels, tfds_name):
    """A prepared TFDS dataset as ``prepared_tfds.scan`` finds it (``tfds_info``)."""
    return tfds_info(prepared_tfds.scan(data_dir, tfds_name), image_size, image_channels)


def tfds_info(prepared, image_size=(), image_channels=0):
    """The ``DatasetInfo`` of the ``prepared_tfds.Prepared`` dataset ``prepared``: the image shape its features
    declare (an alpha channel dropped), a size or channels they leave open read from its first image."""
    height, width, channels = prepared.image_shape
    if channels in (2, 4):
        channels -= 1  # data.py drops the alpha channel
    if (None in (height, width) and not image_size) or (channels is None and not image_channels):
        header = prepared_tfds.first_image_header(prepared)
        height, width = (height, width) if None not in (height, width) else header[:2]
        channels = channels or header[2]
    if image_size:
        height, width = image_size
    return DatasetInfo(height, width, image_channels or channels, len(prepared.class_names), prepared.num_train,
                       prepared.num_test, prepared.class_names)


FOLDER = "folder"  # a folder of class folders of one's own images, in --data_dir (training/image_folder.py)
TFDS = "tfds"  # a dataset TensorFlow Datasets prepared in --data_dir, named by --tfds_name (training/prepared_tfds.py)
# The datasets described by what --data_dir holds, each with its describe(data_dir, image_size, image_channels,
# tfds_name); one that cannot be read raises an errors.DataDirError.
FROM_DISK = {FOLDER: _describe_folder, TFDS: _describe_tfds}
# What --dataset can name.
DATASET_CHOICES = (*DATASETS, *FROM_DISK)


def describe(dataset, data_dir="", image_size=(), image_channels=0, tfds_name=""):
    """The ``DatasetInfo`` of the dataset a run names: a built-in's row of ``DATASETS``; for one of ``FROM_DISK``,
    what ``data_dir`` holds (for ``TFDS``, the prepared dataset ``tfds_name`` in it), with images of ``image_size``
    (height, width) and ``image_channels`` (1 or 3) where given, else the dataset's own. Read from disk (file
    names, JSON and one image's header, no pixels); a dataset that cannot be read there raises an
    ``errors.DataDirError`` (``image_folder.FolderError``, ``prepared_tfds.TfdsError``)."""
    if dataset in FROM_DISK:
        return FROM_DISK[dataset](data_dir, image_size, image_channels, tfds_name)
    return DATASETS[dataset]


# The settings of a run (TrainConfig fields) that say what its dataset is.
DATASET_SETTINGS = ("dataset", "data_dir", "image_size", "image_channels", "tfds_name")


def describe_settings(values):
    """``describe`` of the dataset that ``values`` (setting name -> value, as ``vars(config)``) names."""
    return describe(*(values[name] for name in DATASET_SETTINGS))


def as_record(info):
    """What config.json records of a dataset read from disk (``FROM_DISK``; ``data.fingerprint``), so that a run can
    be opened, exported and predicted with where its data is gone: image shape, class names, image counts."""
    return {"image_shape": list(info.image_shape), "class_names": list(info.class_names),
            "images": [info.num_train, info.num_test]}


def from_record(record):
    """The ``DatasetInfo`` that ``as_record`` wrote into ``record``, or None when it holds none (a built-in
    dataset's record, or a damaged one)."""
    try:
        (height, width, channels), names = record["image_shape"], tuple(record["class_names"])
        num_train, num_test = record["images"]
        if not all(isinstance(v, int) and v > 0 for v in (height, width, channels, num_train, num_test)) \
                or len(names) < 2 or not all(isinstance(name, str) for name in names):
            return None
    except (KeyError, TypeError, ValueError):
        return None
    return DatasetInfo(height, width, channels, len(names), num_train, num_test, names)


def held_out_count(num_train, fraction):
    """How many of ``num_train`` training examples a validation split of ``fraction`` holds out
    (``data.split_validation``); here so that reports can say it without loading TensorFlow."""
    return round(fraction * num_train)
