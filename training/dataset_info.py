"""What each dataset the project knows is (image shape, classes, their names), without loading it.

TensorFlow-free, so that flags and configs can name datasets before TensorFlow is imported; ``data.py`` loads them.
"""

import dataclasses


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


def held_out_count(num_train, fraction):
    """How many of ``num_train`` training examples a validation split of ``fraction`` holds out
    (``data.split_validation``); here so that reports can say it without loading TensorFlow."""
    return round(fraction * num_train)
