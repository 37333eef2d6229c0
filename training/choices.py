"""The names a run's settings can take, without TensorFlow.

``TrainConfig`` declares its fields with these, and the training flags are made from ``TrainConfig`` before
TensorFlow is imported, so a refused flag or ``--help`` costs a fraction of a second rather than TensorFlow's
start-up. The modules that implement each setting check their arguments against the same tuples.
"""

OPTIMIZERS = ("adam", "sgd")  # training/optimization.py
SCHEDULES = ("constant", "cosine", "linear", "triangle", "exponential", "piecewise")  # training/optimization.py
FLIP_MODES = ("random", "alternating", "none")  # training/pipeline.py
TTA_MODES = ("none", "flip", "flip_translate")  # training/loop.py
LOOPS = ("custom", "fit")  # training/trainer.py
IMAGE_FITS = ("stretch", "crop")  # training/pipeline.py (resize_images)
STRATEGIES = ("auto", "default", "one_device", "mirrored", "multi_worker")  # training/distribute.py
STARTUP_TIMEOUT = 300  # seconds a multi-worker run waits at start-up for the other workers of its cluster
