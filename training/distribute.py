"""Devices and ``tf.distribute`` strategies, from plain arguments.

Every strategy runs the same training loop. On a machine without GPUs, ``mirrored`` runs over logical CPU
devices (``configure_devices(num_cpu_devices=N)``), which is how the multi-device paths are tested here.
"""

import json
import os

import tensorflow as tf

STRATEGIES = ("auto", "default", "one_device", "mirrored", "multi_worker")


def configure_devices(num_cpu_devices=1, tf32=True):
    """Sets up devices before TensorFlow initialises them; call once at start-up.

    GPUs get memory growth (take memory as needed rather than all at once). With ``num_cpu_devices > 1`` the
    CPU is split into that many logical devices. ``tf32=False`` turns off TensorFloat-32 matmuls and
    convolutions on Ampere and newer GPUs (TensorFlow enables TF32 by default).
    """
    for gpu in tf.config.list_physical_devices("GPU"):
        tf.config.experimental.set_memory_growth(gpu, True)
    if num_cpu_devices > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * num_cpu_devices)
    tf.config.experimental.enable_tensor_float_32_execution(tf32)


def resolve_strategy_name(name, num_gpus):
    """``auto``: mirrored over two or more GPUs, one_device on a single GPU, the default strategy on CPU."""
    if name != "auto":
        return name
    if num_gpus >= 2:
        return "mirrored"
    return "one_device" if num_gpus == 1 else "default"


def make_strategy(name, gpus=None, cpus=None):
    """The ``tf.distribute.Strategy`` called ``name`` (see ``STRATEGIES``).

    ``gpus`` and ``cpus`` are logical device names; by default those TensorFlow sees. ``mirrored`` replicates
    over all GPUs, or over all logical CPUs when there is no GPU.
    """
    if name == "multi_worker":
        # Before anything lists logical devices: that starts the runtime, and collectives must be set up first.
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")] if gpus is None else gpus
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")] if cpus is None else cpus
    name = resolve_strategy_name(name, len(gpus))
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(gpus[0] if gpus else cpus[0])
    if name == "mirrored":
        if gpus:
            return tf.distribute.MirroredStrategy(gpus)
        # NCCL all-reduce needs GPUs; on CPUs reduce through one device.
        return tf.distribute.MirroredStrategy(cpus, cross_device_ops=tf.distribute.ReductionToOneDevice())
    raise ValueError(f"unknown strategy '{name}'; choose one of {', '.join(STRATEGIES)}")


def is_chief(strategy):
    """Whether this process writes checkpoints, summaries and results (always, outside multi-worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    cluster = resolver.cluster_spec().as_dict()
    if task_type is None or task_type == "chief":
        return True
    return task_type == "worker" and task_id == 0 and "chief" not in cluster


def task_name():
    """``worker-<index>`` (or ``<type>-<index>``) from TF_CONFIG: how this process names its temporary files."""
    task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {})
    return f"{task.get('type', 'worker')}-{task.get('index', 0)}"
