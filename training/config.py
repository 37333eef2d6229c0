"""The frozen description of one training run; the entry point builds it from flags, tests build it directly."""

import dataclasses


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    # What to train.
    dataset: str = "mnist"
    data_dir: str = ""  # folder holding <dataset>.npz; empty: tf.keras.datasets, then the bundled MNIST subset
    allow_download: bool = True  # may tf.keras.datasets download a missing dataset
    arch: str = "mnist_cnn"  # architecture string or preset name (models/architecture.py)
    impl: str = "keras"  # "keras" (subclassed Keras model) or "reference" (low-level tf.nn)
    standardize: bool = False  # per-channel (x - mean) / std from the training set, instead of x / 255
    augment: bool = False  # random crop (4-pixel padding) and horizontal flip

    # Optimisation.
    optimizer: str = "adam"  # "adam" or "sgd"
    learning_rate: float = 1e-3  # peak step size, per update
    momentum: float = 0.9  # SGD momentum (ignored by Adam)
    nesterov: bool = False
    lr_schedule: str = "constant"  # constant | cosine | exponential | piecewise
    warmup_steps: int = 0  # linear warmup from 0 to learning_rate over this many steps
    decay_rate: float = 0.1  # exponential: factor per decay_steps; piecewise: factor at each boundary
    decay_steps: int = 1000  # exponential decay period, in steps
    piecewise_boundaries: tuple = ()  # piecewise: fractions of train_steps where the rate is multiplied
    weight_decay: float = 0.0  # decoupled weight decay on kernels, per update, scaled by learning rate
    label_smoothing: float = 0.0

    # Budget and loop.
    batch_size: int = 128  # global batch size across all replicas
    train_steps: int = 0  # total optimizer steps; 0: use epochs
    epochs: float = 10.0  # passes over the training set, used when train_steps is 0
    eval_every: int = 0  # steps between evaluations on the test set; 0: only at the end
    log_every: int = 100  # steps between console lines and train/ scalars
    checkpoint_every: int = 1000  # steps between checkpoints (one is always written at the end)
    steps_per_loop: int = 10  # train steps per tf.function call; log/eval/checkpoint intervals round up to it
    loop: str = "custom"  # "custom" (tf.function loop) or "fit" (Keras compile/fit/evaluate)
    eval_batch_size: int = 1000
    seed: int = 0
    deterministic: bool = False  # bit-reproducible kernels (slower)
    jit_compile: bool = False  # compile the train step with XLA

    # Devices and numerics.
    strategy: str = "default"  # auto | default | one_device | mirrored | multi_worker (training/distribute.py)
    precision: str = "float32"  # float32 | mixed_float16 | mixed_bfloat16 (float32 variables in every case)
    profile_steps: tuple = ()  # (first, last) training steps, 1-based, to record a profiler trace of

    # Where the run lives.
    logdir: str = "runs/default"
    resume: bool = True  # continue from the last checkpoint in logdir; False refuses a non-empty logdir
