"""Multi-device and multi-worker training reproduce one-device training, and checkpoints move between strategies.

Two logical CPU devices must be configured before TensorFlow initialises its devices, and
MultiWorkerMirroredStrategy must be created at start-up, so those runs happen in subprocesses running
tests/distributed_job.py. One subprocess with two logical CPUs trains every single-process configuration (the
default strategy runs there too, on the first device), so TensorFlow is imported once for all of them; the same
process checks that both networks' batch-norm statistics are global under two replicas (float64, one forward pass).
"""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from training import distribute, trainer
from training.config import TrainConfig

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
JOB = REPO_ROOT / "tests" / "distributed_job.py"

# Every weight comparison below is between float32 runs over identical global batches from identical initial
# weights. Across replicas the mean loss's gradient is summed per replica half-batch, then all-reduced: another
# summation order than one device's, so weights differ by rounding only. After 10 Adam steps (lr 1e-3) the
# largest differences measured were 5e-8 without batch norm and 7e-7 with synchronized batch norm on both sides
# (sums and sums of squares all-reduced, then E[x^2] - E[x]^2). The Keras network on one replica trains with
# the fused kernel, which takes the variance around the mean: 1.2e-5 between it and two replicas, for mirrored,
# resumed and two-worker runs alike. 1e-4 leaves nearly an order of magnitude for other CPUs and kernels, while a
# real mistake moves weights by 1e-3 or more within 10 steps (6e-3 measured with replicas normalising by their
# own half-batch statistics).
ATOL = 1e-4
# Tiny cut of the bundled MNIST subset: 32 global batches of 32 per epoch; 200 test images, 2 eval batches.
TRAIN_SIZE, TEST_SIZE = 1024, 200
# Conv, pool and dense layers and a (synchronized) batch norm: a net without batch norm would check a subset of
# this (it was dropped to keep the suite under its time budget).
ARCHS = {"bn": "c8k3-m2-c8k3b-m2-d32"}
AIRBENCH_ARCH = "w2t-B8-gmp-lin9"
# airbench's pieces make a chaotic 10 steps: scale-free batch norm and the 64x rate on its biases amplify the
# rounding differences of the replicas' summation order until a max pool's winner may flip. Measured (WORKSPACE.md
# section 14), seeds 0-4: mirrored against default ended 8.2e-4, 4.2e-4, 3.9e-6, 3.1e-6 and 3.2e-4 apart (seed 0:
# 8e-6 after one step, 1.3e-4 after the second). A piece missing under one strategy moves weights much further
# in the same 10 steps (default strategy, seed 0, each piece off): lookahead 0.10, the bias rate 0.16, a doubled
# learning rate 0.23. Weight decay (1.3e-3) and the whitening bias's freeze (1.6e-4) are too
# small to tell from the noise here: both are the same optimizer and hook under every strategy, checked in
# tests/test_airbench_parts.py, and replica_spread == 0 shows they reached each replica alike.
AIRBENCH_ATOL = 1e-2
BASE = dict(dataset="mnist", allow_download=False, batch_size=32, eval_batch_size=100, train_steps=10,
            log_every=10, steps_per_loop=10, checkpoint_every=1000, seed=0)
# A subprocess imports TensorFlow (~5 s, more on a loaded 2-core machine), then traces each run's functions.
JOB_TIMEOUT_SECONDS = 300
WORKER_TIMEOUT_SECONDS = 120
# Single-process runs: every (impl, arch) under default and mirrored, then the resume round trips.
IMPLS = ("keras", "reference")
# (impl, arch, first strategy, then): each way once, one per network (the reference net's checkpoint holds plain
# tf.Variables, the Keras net's Keras variables; each resumed run costs the suite seconds of tracing).
RESUMED = [("keras", "bn", "mirrored", "default"), ("reference", "bn", "default", "mirrored")]
# airbench94's pieces on a tiny net: frozen whitening (set in the strategy's scope) with a bias that trains for
# 5 steps (0.15 of 32 steps per epoch) and is then kept, scale-free batch norm, the 64x bias rate, weight decay of
# kernels and biases, lookahead (syncs every 2 steps from step 3) and six-view TTA: the freeze and the lookahead
# are cross-replica assignments.
AIRBENCH = dict(standardize=True, optimizer="sgd", learning_rate=0.02, momentum=0.85, nesterov=True,
                bn_bias_lr_scale=64.0, weight_decay=0.005, decay_biases=True, whitening_bias_epochs=0.15,
                lookahead_every=2, lookahead_start_epochs=0.1, test_time_augmentation="flip_translate")


def job_env(tmp, **extra):
    """The subprocess environment: repository on the path, an empty Keras cache, no TF_CONFIG unless given."""
    keras_home = tmp / "keras_home"
    keras_home.mkdir(exist_ok=True)
    env = {key: value for key, value in os.environ.items() if key != "TF_CONFIG"}
    env.update(PYTHONPATH=str(REPO_ROOT), TF_CPP_MIN_LOG_LEVEL="2", KERAS_HOME=str(keras_home), **extra)
    return env


def write_spec(path, runs, num_cpu_devices, two_replica_batch_norm=False):
    spec = dict(num_cpu_devices=num_cpu_devices, train_size=TRAIN_SIZE, test_size=TEST_SIZE,
                out=str(path.with_suffix(".out.json")), runs=runs, two_replica_batch_norm=two_replica_batch_norm)
    path.write_text(json.dumps(spec, indent=2))
    return spec


def start_job(spec_path, env, log_path):
    log = open(log_path, "w")
    # Its own process group, so a timeout or failure kills the job and anything it started.
    process = subprocess.Popen([sys.executable, str(JOB), "--spec", str(spec_path)], cwd=REPO_ROOT, env=env,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    process.log, process.log_path = log, log_path
    return process


def stop(process):
    """Kills the process group of ``process`` if it still runs; always reaps it and closes its log."""
    try:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    except ProcessLookupError:
        pass
    finally:
        process.log.close()


def wait_all(processes, timeout):
    """Waits for every process until ``timeout`` seconds from now; fails naming any that did not finish or
    exited with an error, with the end of its output."""
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pytest.fail(f"{process.args} still running after {timeout} s; output:\n{tail(process.log_path)}")
    for process in processes:
        if process.returncode != 0:
            pytest.fail(f"{process.args} exited with {process.returncode}; output:\n{tail(process.log_path)}")


def tail(path, lines=40):
    return "\n".join(pathlib.Path(path).read_text(errors="replace").splitlines()[-lines:])


def run_name(impl, arch, strategy, steps=10):
    return f"{impl}-{arch}-{strategy}-{steps}"


def single_process_runs(tmp):
    runs = []

    def add(name, logdir, impl, arch, strategy, train_steps, **extra):
        config = dict(BASE, impl=impl, arch=ARCHS.get(arch, AIRBENCH_ARCH), strategy=strategy, train_steps=train_steps,
                      logdir=str(tmp / logdir), **extra)
        runs.append(dict(name=name, config=config, weights=str(tmp / f"{name}.npz")))

    for impl in IMPLS:
        for arch in ARCHS:
            for strategy in ("default", "mirrored"):
                add(run_name(impl, arch, strategy), run_name(impl, arch, strategy), impl, arch, strategy, 10)
    for strategy in ("default", "mirrored"):
        add(run_name("keras", "airbench", strategy), run_name("keras", "airbench", strategy), "keras", "airbench",
            strategy, 10, **AIRBENCH)
    for impl, arch, first, then in RESUMED:
        # The 10-step run's directory is resumed under the other strategy for 10 more steps.
        add(f"{impl}-{arch}-{first}-then-{then}", run_name(impl, arch, first), impl, arch, then, 20)
    for impl, arch in sorted({(impl, arch) for impl, arch, _, _ in RESUMED}):
        add(run_name(impl, arch, "default", 20), run_name(impl, arch, "default", 20), impl, arch, "default", 20)
    return runs


@pytest.fixture(scope="module")
def single_process(tmp_path_factory):
    """Runs every single-process configuration in one subprocess with 2 logical CPUs; returns
    ``(summary, tmp)``: the job's summary (results, log lines, replica spread per run) and its folder."""
    tmp = tmp_path_factory.mktemp("single_process")
    write_spec(tmp / "spec.json", single_process_runs(tmp), num_cpu_devices=2, two_replica_batch_norm=True)
    process = start_job(tmp / "spec.json", job_env(tmp), tmp / "job.log")
    try:
        wait_all([process], JOB_TIMEOUT_SECONDS)
    finally:
        stop(process)
    return json.loads((tmp / "spec.out.json").read_text()), tmp


def weights(tmp, name):
    with np.load(tmp / f"{name}.npz") as npz:
        return {key: npz[key] for key in npz.files}


def max_difference(a, b):
    """Largest |a - b| over every weight; the two runs must hold the same names and shapes."""
    assert list(a) == list(b)
    for name in a:
        assert a[name].shape == b[name].shape, name
    return max(float(np.max(np.abs(a[name] - b[name]))) for name in a)


@pytest.mark.slow
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("arch", ARCHS)
def test_mirrored_over_two_cpus_matches_default_strategy(single_process, impl, arch):
    summary, tmp = single_process
    default, mirrored = summary[run_name(impl, arch, "default")], summary[run_name(impl, arch, "mirrored")]
    assert (default["results"]["num_replicas"], mirrored["results"]["num_replicas"]) == (1, 2)
    assert mirrored["results"]["strategy"] == "MirroredStrategy"
    assert default["dtypes"] == mirrored["dtypes"] == ["float32"]
    # Every replica applies the same all-reduced gradient with the same kernels: the copies are bit-identical.
    assert mirrored["replica_spread"] == 0.0
    difference = max_difference(weights(tmp, run_name(impl, arch, "default")),
                                weights(tmp, run_name(impl, arch, "mirrored")))
    assert difference <= ATOL, f"max |mirrored - default| = {difference:.3g}"
    # The test set is split into per-replica batches of 50; the loss means differ by rounding only.
    assert mirrored["results"]["test_loss"] == pytest.approx(default["results"]["test_loss"], abs=ATOL)


# float64 forward passes of the same weights: anything above ~1e-12 would be a real difference.
FLOAT64_TOL = 1e-10


@pytest.mark.slow
def test_batch_norm_statistics_are_global_under_two_replicas(single_process):
    # Two replicas with half a batch each must compute the single-device batch statistics, in both networks.
    summary, _ = single_process
    differences = summary["two_replica_batch_norm"]
    assert set(differences) == {"keras", "reference"}
    for impl, difference in differences.items():
        assert difference <= FLOAT64_TOL, f"{impl}: max |two replicas - one device| = {difference:.3g}"


@pytest.mark.slow
def test_airbench_pieces_under_mirrored_match_the_default_strategy(single_process):
    summary, tmp = single_process
    name = {strategy: run_name("keras", "airbench", strategy) for strategy in ("default", "mirrored")}
    assert summary[name["mirrored"]]["replica_spread"] == 0.0
    difference = max_difference(weights(tmp, name["default"]), weights(tmp, name["mirrored"]))
    assert difference <= AIRBENCH_ATOL, f"max |mirrored - default| = {difference:.3g}"
    assert summary[name["mirrored"]]["results"]["test_loss"] == pytest.approx(
        summary[name["default"]]["results"]["test_loss"], abs=AIRBENCH_ATOL)


RESUME_CASES = [pytest.param(*case, id="{}-{}-{}-then-{}".format(*case)) for case in RESUMED]


@pytest.mark.slow
@pytest.mark.parametrize("impl, arch, first, then", RESUME_CASES)
def test_resume_under_the_other_strategy_continues_the_step(single_process, impl, arch, first, then):
    summary, tmp = single_process
    resumed = summary[f"{impl}-{arch}-{first}-then-{then}"]
    logdir = tmp / run_name(impl, arch, first)
    assert any(line.startswith(f"resumed from {logdir / 'checkpoints' / 'ckpt-10'} at step 10")
               for line in resumed["log"]), resumed["log"]
    assert resumed["results"]["train_steps"] == 20
    assert json.loads((logdir / "results.json").read_text())["train_steps"] == 20
    assert resumed["results"]["num_replicas"] == (2 if then == "mirrored" else 1)


@pytest.mark.slow
@pytest.mark.parametrize("impl, arch, first, then", RESUME_CASES)
def test_resume_under_the_other_strategy_matches_a_straight_run(single_process, impl, arch, first, then):
    _, tmp = single_process
    straight = weights(tmp, run_name(impl, arch, "default", 20))
    difference = max_difference(weights(tmp, f"{impl}-{arch}-{first}-then-{then}"), straight)
    assert difference <= ATOL, f"max |resumed - straight 20-step run| = {difference:.3g}"


def test_batch_size_not_divisible_by_replicas_fails_before_anything_is_written(tmp_path):
    logdir = tmp_path / "run"
    completed = subprocess.run(
        [sys.executable, "-m", "training.train", "--num_cpu_devices=2", "--strategy=mirrored", "--batch_size=33",
         "--arch=c4k3-m2-d16", "--train_steps=1", f"--logdir={logdir}"],
        cwd=REPO_ROOT, env=job_env(tmp_path), capture_output=True, text=True, timeout=JOB_TIMEOUT_SECONDS)
    # Caught when the flags are parsed (a usage error), before any device or file is touched; replica counts
    # known only at run time (GPUs, workers) are checked by trainer.check_batch_sizes, tested below.
    assert completed.returncode == 2, completed.stderr
    ours = [line for line in completed.stderr.splitlines() if "--batch_size" in line]
    assert ours == ["train.py: error: flags strategy=mirrored, num_cpu_devices=2, batch_size=33, eval_batch_size=1000: "
                    "--batch_size and --eval_batch_size are global and must divide by --num_cpu_devices under "
                    "--strategy=mirrored"], completed.stderr
    assert "Traceback" not in completed.stderr
    assert not logdir.exists()


@pytest.mark.parametrize("field", ["batch_size", "eval_batch_size"])
def test_check_batch_sizes_names_the_flag(field):
    config = TrainConfig(**{field: 33})
    with pytest.raises(trainer.RunError, match=f"^--{field}=33 does not divide by the 2 replicas"):
        trainer.check_batch_sizes(config, num_replicas=2)
    trainer.check_batch_sizes(config, num_replicas=1)


# --- Two workers on localhost -----------------------------------------------------------------------------

def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


MULTI_WORKER_ARCH = "bn"  # batch norm synchronized across processes is the hardest part to get right


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    """Trains 10 steps with MultiWorkerMirroredStrategy over two local worker processes sharing one --logdir.

    Each worker has its own TMPDIR, where a non-chief worker keeps its throw-away run directory.
    """
    tmp = tmp_path_factory.mktemp("two_workers")
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    config = dict(BASE, impl="keras", arch=ARCHS[MULTI_WORKER_ARCH], strategy="multi_worker",
                  logdir=str(tmp / "run"))
    processes = []
    try:
        for index in range(2):
            spec = tmp / f"worker{index}.json"
            write_spec(spec, [dict(name="multi_worker", config=config, weights=str(tmp / f"worker{index}.npz"))],
                       num_cpu_devices=1)
            (tmp / f"tmp{index}").mkdir()
            tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
            env = job_env(tmp, TF_CONFIG=tf_config, TMPDIR=str(tmp / f"tmp{index}"))
            processes.append(start_job(spec, env, tmp / f"worker{index}.log"))
        wait_all(processes, WORKER_TIMEOUT_SECONDS)
    finally:
        for process in processes:
            stop(process)
    summaries = [json.loads((tmp / f"worker{i}.out.json").read_text())["multi_worker"] for i in range(2)]
    return summaries, [process.pid for process in processes], tmp


@pytest.mark.slow
def test_two_workers_end_with_the_weights_of_one_process(two_workers, single_process):
    summaries, _, tmp = two_workers
    summary, single_tmp = single_process
    for result in summaries:
        assert result["results"]["num_replicas"] == 2
        assert result["results"]["train_steps"] == 10
    chief, other = weights(tmp, "worker0"), weights(tmp, "worker1")
    # Both workers apply the same all-reduced gradients to the same broadcast initial weights.
    assert max_difference(chief, other) == 0.0
    single = weights(single_tmp, run_name("keras", MULTI_WORKER_ARCH, "default"))
    difference = max_difference(chief, single)
    assert difference <= ATOL, f"max |two workers - one process| = {difference:.3g}"
    # Each worker evaluates half of the test set; the metrics are summed across workers.
    one_process_loss = summary[run_name("keras", MULTI_WORKER_ARCH, "default")]["results"]["test_loss"]
    for result in summaries:
        assert result["results"]["test_loss"] == pytest.approx(one_process_loss, abs=ATOL)


@pytest.mark.slow
def test_only_the_chief_keeps_a_run_directory(two_workers):
    summaries, pids, tmp = two_workers
    run = tmp / "run"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "checkpoint", "ckpt-10.data-00000-of-00001", "ckpt-10.index"]
    assert json.loads((run / "results.json").read_text())["train_steps"] == 10
    # TensorBoard event files are named events.out.tfevents.<time>.<host>.<pid>.<n>.v2: all are the chief's.
    events = sorted(run.glob("*/events.out.tfevents.*"))
    assert {path.parent.name for path in events} == {"train", "eval"}
    assert {int(path.name.split(".")[-3]) for path in events} == {pids[0]}
    # The non-chief wrote its share of the checkpoint into a temporary directory under its TMPDIR, then removed
    # it; nothing else under the test's folder is a run directory.
    removed = [line for line in summaries[1]["log"] if line.startswith("removed this worker's temporary")]
    assert len(removed) == 1 and str(tmp / "tmp1" / "worker-1-") in removed[0], summaries[1]["log"]
    assert not any(line.startswith("removed this worker's temporary") for line in summaries[0]["log"])
    assert [p for p in (tmp / "tmp1").iterdir() if p.name.startswith("worker-")] == []
    assert sorted(p.parent.name for p in tmp.rglob("results.json")) == ["run"]


# --- Strategy choice ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("num_gpus, expected", [(0, "default"), (1, "one_device"), (2, "mirrored"), (4, "mirrored")])
def test_auto_strategy_name(num_gpus, expected):
    assert distribute.resolve_strategy_name("auto", num_gpus) == expected


def test_explicit_strategy_name_is_kept():
    for name in ("default", "one_device", "mirrored", "multi_worker"):
        assert distribute.resolve_strategy_name(name, 4) == name


def test_auto_strategy_from_injected_devices():
    import tensorflow as tf

    cpu = "/device:CPU:0"
    assert distribute.make_strategy("auto", gpus=[], cpus=[cpu]) is tf.distribute.get_strategy()
    one = distribute.make_strategy("auto", gpus=["/device:GPU:0"], cpus=[cpu])
    assert isinstance(one, tf.distribute.OneDeviceStrategy)
    assert one.extended.worker_devices == ("/job:localhost/replica:0/task:0/device:GPU:0",)
    # MirroredStrategy takes device names without checking that the devices exist, so four GPUs can be faked.
    gpus = [f"/device:GPU:{i}" for i in range(4)]
    mirrored = distribute.make_strategy("auto", gpus=gpus, cpus=[cpu])
    assert isinstance(mirrored, tf.distribute.MirroredStrategy)
    assert mirrored.num_replicas_in_sync == 4
    on_cpus = distribute.make_strategy("mirrored", gpus=[], cpus=[cpu])
    assert isinstance(on_cpus.extended._cross_device_ops, tf.distribute.ReductionToOneDevice)
    with pytest.raises(ValueError, match="unknown strategy 'bogus'"):
        distribute.make_strategy("bogus", gpus=[], cpus=[cpu])


def test_default_strategy_is_chief():
    import tensorflow as tf

    assert distribute.is_chief(tf.distribute.get_strategy())
    assert distribute.task_name(tf.distribute.get_strategy()) == "worker-0"  # outside multi-worker: the one worker


# TF_CONFIGs left from another job. MirroredStrategy parsed them and raised a JSONDecodeError or AttributeError with
# a traceback; the run's own naming of its worker (``task_name``) did too, under every strategy.
STALE_TF_CONFIGS = ['{"cluster": ', "[1, 2]", '{"task": "x"}',
                    '{"cluster": {"worker": ["127.0.0.1:1111", "127.0.0.1:2222"]}, "task": {"type": "worker", '
                    '"index": 1}}']


@pytest.mark.parametrize("text", STALE_TF_CONFIGS)
def test_a_stale_tf_config_is_ignored_with_a_warning_outside_multi_worker(text, monkeypatch, caplog):
    import tensorflow as tf

    monkeypatch.setenv("TF_CONFIG", text)
    cpu = "/device:CPU:0"
    with caplog.at_level("WARNING"):
        strategies = {name: distribute.make_strategy(name, gpus=[], cpus=[cpu]) for name in ("auto", "mirrored")}
    assert strategies["auto"] is tf.distribute.get_strategy()
    assert strategies["mirrored"].extended.worker_devices == ("/job:localhost/replica:0/task:0/device:CPU:0",)
    assert [record.getMessage() for record in caplog.records if "TF_CONFIG" in record.getMessage()] == [
        f"TF_CONFIG is set but ignored: --strategy={name} trains in this process alone (only --strategy=multi_worker "
        f"reads TF_CONFIG); unset it if it is left from another job" for name in ("auto", "mirrored")]
    assert os.environ["TF_CONFIG"] == text  # hidden from the strategy only
    assert {distribute.task_name(strategy) for strategy in strategies.values()} == {"worker-0"}
    assert all(distribute.is_chief(strategy) for strategy in strategies.values())


def test_a_run_with_a_stale_tf_config_trains_on_its_own(tmp_path, tiny_config, tiny_mnist, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", STALE_TF_CONFIGS[1])
    result = trainer.train(tiny_config(tmp_path / "run"), dataset=tiny_mnist)
    assert (result.results["train_steps"], result.results["num_replicas"]) == (20, 1)
    assert (tmp_path / "run" / "results.json").exists()  # written by this process, the chief of nothing
