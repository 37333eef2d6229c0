"""A multi-worker run that cannot go on stops with one line, promptly, and leaves no temporary directory.

The cluster's tasks are ``python3 -m training.train`` processes on 127.0.0.1, on free ports. TF_CONFIG mistakes
and the waiting for the other tasks (its time-out, a port in use, SIGTERM meanwhile) are tested in-process
first (no TensorFlow start-up); then the processes: a worker whose peer never starts, a worker whose chief
is killed mid-run, and two workers started with different settings and data. Each process imports TensorFlow
(~4 s, more on a loaded 2-core machine).
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tensorflow as tf

from tests.test_distributed import REPO_ROOT, free_ports, job_env, stop, tail
from training import data as data_lib
from training import distribute
from training.config import TrainConfig
from training.errors import RunError

WORKERS = ["127.0.0.1:1111", "127.0.0.1:2222"]
STARTUP_TIMEOUT = 5  # seconds; --startup_timeout of the worker whose peer never starts
SIGNAL_SECONDS = 5  # from the start of the wait to its end: the signal comes after 0.5 s, its handler raises at once
LOST_EXIT_SECONDS = 30  # from kill -9 of the chief to the other worker's end: measured 2-4 s
START_SECONDS = 180  # for processes to import TensorFlow and reach the line the test waits for


def tf_config(workers, index, job="worker"):
    return json.dumps({"cluster": {"worker": workers}, "task": {"type": job, "index": index}})


# --- TF_CONFIG ---------------------------------------------------------------------------------------------

def test_tf_config_names_every_task_and_this_one():
    text = json.dumps({"cluster": {"worker": WORKERS, "chief": ["127.0.0.1:3333"]},
                       "task": {"type": "worker", "index": 1}})
    tasks, own = distribute.read_tf_config(text)
    assert [str(task) for task in tasks] == ["chief 0 (127.0.0.1:3333)", "worker 0 (127.0.0.1:1111)",
                                             "worker 1 (127.0.0.1:2222)"]
    assert own == tasks[2]


BAD_TF_CONFIGS = {  # case: (TF_CONFIG, how the error starts)
    "missing": ("", "--strategy=multi_worker needs TF_CONFIG to name the cluster and this process's task in it"),
    "not JSON": ('{"cluster": {"worker": ["127.0.0.1:1111"]}',
                 "TF_CONFIG is not valid JSON (Expecting ',' delimiter: line 1 column 43 (char 42))"),
    "no cluster": ('{"task": {"type": "worker", "index": 0}}', 'TF_CONFIG has no "cluster"'),
    "no task in the cluster": ('{"cluster": {}, "task": {"type": "worker", "index": 0}}',
                               "TF_CONFIG's cluster names no chief or worker task"),
    "a parameter server": ('{"cluster": {"worker": ["127.0.0.1:1111"], "ps": ["127.0.0.1:2222"]}}',
                           "TF_CONFIG's cluster has ps tasks; multi-worker training takes chief and worker tasks"),
    "no port": ('{"cluster": {"worker": ["127.0.0.1"]}}', 'TF_CONFIG\'s worker 0 address "127.0.0.1" is not'),
    "one port twice": ('{"cluster": {"worker": ["127.0.0.1:1111", "127.0.0.1:1111"]}}',
                       "TF_CONFIG's cluster gives worker 0 and worker 1 the same address 127.0.0.1:1111"),
    "no task": ('{"cluster": {"worker": ["127.0.0.1:1111"]}}',
                'TF_CONFIG has no "task" saying which task of the cluster this process is'),
    "index outside": (tf_config(WORKERS, 2),
                      'TF_CONFIG\'s task "worker" 2 is not in the cluster, which has worker 0-1'),
    "type outside": (tf_config(WORKERS, 0, job="chief"), 'TF_CONFIG\'s task "chief" 0 is not in the cluster'),
    "index not a number": (tf_config(WORKERS, True), 'TF_CONFIG\'s task "worker" true is not in the cluster'),
}


@pytest.mark.parametrize("case", BAD_TF_CONFIGS)
def test_bad_tf_config_is_refused_with_one_line(case):
    text, message = BAD_TF_CONFIGS[case]
    with pytest.raises(RunError) as refused:
        distribute.read_tf_config(text)
    assert str(refused.value).startswith(message)
    assert "\n" not in str(refused.value)


# --- Waiting for the other tasks, in-process ----------------------------------------------------------------

def two_tasks():
    tasks, _ = distribute.read_tf_config(tf_config([f"127.0.0.1:{port}" for port in free_ports(2)], 0))
    return tasks


# Started together, each task's first look reaches the other while that one is looking too: each must still
# answer at once (before, each waited for the other's answer, and both took the other for a foreign process).
@pytest.mark.parametrize("delay", [0.0, 1.0])
def test_tasks_waiting_for_each_other_all_go_on(delay):
    first, second = two_tasks()
    ready, errors = {first: threading.Event(), second: threading.Event()}, []

    def start(own, other, delay):
        time.sleep(delay)
        try:
            distribute.wait_for_tasks(own, [other], timeout=10)
        except RunError as error:
            errors.append(error)
        # As TensorFlow's server takes the port over and answers every look, until the other task has gone on.
        with distribute._own_port(own) as server:
            ready[own].set()
            while not ready[other].wait(timeout=0.05):
                distribute._close_connections(server)

    late = threading.Thread(target=start, args=(second, first, delay))
    late.start()
    begin = time.monotonic()
    start(first, second, 0.0)
    late.join()
    assert errors == []
    assert time.monotonic() - begin < delay + 2  # the delay, then a look every 0.5 s


def test_waiting_for_a_task_that_never_starts_names_it():
    own, other = two_tasks()
    start = time.monotonic()
    with pytest.raises(RunError, match=rf"^worker 1 \(127.0.0.1:{other.address.split(':')[1]}\) did not start "
                       r"within --startup_timeout=1 s; start every task"):
        distribute.wait_for_tasks(own, [other], timeout=1)
    assert time.monotonic() - start < 5


def test_a_process_that_is_not_a_task_at_its_address_is_named_not_taken_for_it():
    own, other = two_tasks()
    host, port = other.address.rsplit(":", 1)
    with socket.create_server((host, int(port))):  # another process's server: accepts nothing, answers nothing
        assert distribute._listening(other.address) == "other"
        with pytest.raises(RunError, match=rf"^a process that is not a task of this cluster listens at the address "
                                           rf"of worker 1 \({re.escape(other.address)}\); stop it"):
            distribute.wait_for_tasks(own, [other], timeout=1)
    with distribute._own_port(other) as server:  # the task itself, waiting: it greets every look
        looked = threading.Thread(target=lambda: time.sleep(0.2) or distribute._close_connections(server))
        looked.start()
        assert distribute._listening(other.address) == "task"
        looked.join()
    assert distribute._listening(other.address) is None


def test_a_port_in_use_is_named():
    own, other = two_tasks()
    with distribute._own_port(own), pytest.raises(RunError, match=rf"^{re.escape(str(own))}: port \d+ cannot be "
                                                                 r"opened \(Address already in use\)"):
        distribute.wait_for_tasks(own, [other], timeout=1)


def test_sigterm_while_waiting_stops_with_one_line_and_gives_the_handler_back():
    # The signal goes to this process: Python runs handlers in the main thread only, and without the start-up's
    # handler SIGTERM would end the test process. (SIGINT takes the same handler; it is left out here because
    # without that handler it would stop the whole test session.)
    assert threading.current_thread() is threading.main_thread(), "needs the main thread to receive the signal"
    number = signal.SIGTERM
    own, other = two_tasks()
    before = signal.getsignal(number)
    timer = threading.Timer(0.5, signal.raise_signal, (number,))
    start = time.monotonic()
    with pytest.raises(RunError) as stopped:
        with distribute._stop_on_signals([other]):
            timer.start()
            distribute.wait_for_tasks(own, [other], timeout=30)
    timer.join()
    assert str(stopped.value) == f"stopped by {number.name} while waiting for {other}"
    assert time.monotonic() - start < SIGNAL_SECONDS
    assert signal.getsignal(number) is before


def test_lost_worker_is_named_with_the_cause(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", tf_config(WORKERS, 1))
    # The survivor's error when the chief was killed mid-step (as measured), shortened.
    error = tf.errors.UnavailableError(None, None, (
        "Graph execution error:\n\nDetected at node while/adam/CollectiveReduceV2 defined at (most recent call "
        "last):\n  File \"training/loop.py\", line 41, in train_loop\n\nCollective ops is aborted by: "
        "recvmsg:Connection reset by peer\nAdditional GRPC error information from remote target "
        "/job:worker/replica:0/task:0 while calling /tensorflow.WorkerService/RecvBuf:\n:UNKNOWN:Error received"))
    assert str(distribute.lost_worker(error)) == (
        "worker 0 (127.0.0.1:1111) lost: recvmsg:Connection reset by peer; the run stopped, restart every task to "
        "resume from the last checkpoint")
    unnamed = tf.errors.DeadlineExceededError(None, None, "Graph execution error:\n\nDeadline Exceeded")
    assert str(distribute.lost_worker(unnamed)).startswith("another task of the cluster lost: Deadline Exceeded;")


# --- Workers as processes --------------------------------------------------------------------------------------

def start_train(tmp, name, tf_config_text, *flags, logdir=None):
    """Starts ``python3 -m training.train --strategy=multi_worker`` in its own session, with its own TMPDIR,
    output to ``<name>.log``; SIGINT is not ignored in it, whatever this process does with it."""
    (tmp / f"tmp-{name}").mkdir()
    extra = {"TMPDIR": str(tmp / f"tmp-{name}")}
    if tf_config_text is not None:
        extra["TF_CONFIG"] = tf_config_text
    log = open(tmp / f"{name}.log", "w")  # noqa: SIM115 (closed by stop())
    process = subprocess.Popen(
        [sys.executable, "-m", "training.train", "--strategy=multi_worker", "--nodownload", "--arch=c4k3-m2-d16",
         "--batch_size=64", f"--logdir={logdir or tmp / name}", *flags],
        cwd=REPO_ROOT, env=job_env(tmp, **extra), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # noqa: PLW1509 (no threads run here)
    process.log, process.log_path, process.name = log, tmp / f"{name}.log", name
    return process


def wait_for_line(process, text, timeout=START_SECONDS):
    deadline = time.monotonic() + timeout
    while text not in process.log_path.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"{process.name} never logged {text!r}; output:\n{tail(process.log_path)}")
        time.sleep(0.2)


def error_lines(output):
    return [line for line in output.splitlines() if line.startswith("train: error:")]


@pytest.fixture(scope="module")
def lone_worker(tmp_path_factory, tiny_mnist_dir):
    """Runs worker 0 of a two-worker cluster whose worker 1 never starts. Returns ``(returncode, output,
    cluster)``."""
    tmp = tmp_path_factory.mktemp("lone_worker")
    cluster = [f"127.0.0.1:{port}" for port in free_ports(2)]
    process = start_train(tmp, "lone", tf_config(cluster, 0), f"--data_dir={tiny_mnist_dir}",
                          f"--startup_timeout={STARTUP_TIMEOUT}")
    try:
        process.wait(timeout=START_SECONDS)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running after {START_SECONDS} s; output:\n{tail(process.log_path)}")
    finally:
        stop(process)
    return process.returncode, process.log_path.read_text(errors="replace"), cluster


@pytest.mark.slow
def test_worker_whose_peer_never_starts_says_whom_it_waits_for_then_stops(lone_worker):
    returncode, output, cluster = lone_worker
    assert f"worker 0 ({cluster[0]}): waiting up to {STARTUP_TIMEOUT} s for worker 1 ({cluster[1]}) to start" \
        in output
    assert returncode == 1, output
    expected = (f"train: error: worker 1 ({cluster[1]}) did not start within --startup_timeout={STARTUP_TIMEOUT} s; "
                f"start every task of TF_CONFIG's cluster, each with its own task index")
    assert error_lines(output) == [expected], output
    assert "Traceback" not in output


@pytest.mark.slow
def test_killed_chief_stops_the_other_worker_with_one_line(tmp_path, tiny_mnist_dir):
    cluster = [f"127.0.0.1:{port}" for port in free_ports(2)]
    flags = [f"--data_dir={tiny_mnist_dir}", "--train_steps=100000", "--log_every=10", "--steps_per_loop=10",
             "--checkpoint_every=100000"]
    chief = start_train(tmp_path, "chief", tf_config(cluster, 0), *flags, logdir=tmp_path / "run")
    other = start_train(tmp_path, "other", tf_config(cluster, 1), *flags, logdir=tmp_path / "run")
    try:
        wait_for_line(other, "step 10/")  # both are in the training loop
        os.kill(chief.pid, signal.SIGKILL)
        killed = time.monotonic()
        try:
            other.wait(timeout=LOST_EXIT_SECONDS)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the other worker still runs {LOST_EXIT_SECONDS} s after its chief was killed; output:\n"
                        f"{tail(other.log_path)}")
        seconds = time.monotonic() - killed
    finally:
        stop(chief)
        stop(other)
    output = other.log_path.read_text(errors="replace")
    assert other.returncode == 1, output
    lines = error_lines(output)
    assert len(lines) == 1 and lines[0].startswith(f"train: error: worker 0 ({cluster[0]}) lost: "), output
    assert lines[0].endswith("; the run stopped, restart every task to resume from the last checkpoint")
    assert "Traceback" not in output
    # Its share of the checkpoints went to a temporary directory under its TMPDIR, removed on the way out.
    assert [path.name for path in (tmp_path / "tmp-other").iterdir() if path.name.startswith("worker-")] == []
    assert "removed this worker's temporary run directory" in output
    print(f"the other worker ended {seconds:.1f} s after its chief was killed")


# --- Workers started with different settings ------------------------------------------------------------------

DATA = {"sha256": "7cd1530655342d6b7099a2eab659506c90b74095e3963dd16ddc6e6d81acd997", "source": "/a/mnist.npz"}


def test_settings_that_may_differ_between_workers_are_not_compared():
    # Each machine keeps its copy of the data where it likes (its bytes are compared), and waits as long as it likes.
    chief = distribute.worker_settings(TrainConfig(), DATA)
    other = distribute.worker_settings(TrainConfig(data_dir="/b", allow_download=False, startup_timeout=9),
                                       dict(DATA, source="/b/mnist.npz"))
    assert chief["settings"] == other["settings"]
    assert chief["settings"]["data"] == DATA["sha256"] and "data_dir" not in chief["settings"]


def test_the_disagreement_names_the_chief_and_the_first_worker_that_differs():
    tasks, _ = distribute.read_tf_config(tf_config(["127.0.0.1:1111", "127.0.0.1:2222", "127.0.0.1:3333"], 0))
    chief, first, second = tasks
    published = {chief: distribute.worker_settings(TrainConfig(), DATA),
                 first: distribute.worker_settings(TrainConfig(learning_rate=0.01, seed=1, train_steps=5, batch_size=64,
                                                               arch="c4k3-m2-d16"), dict(DATA, sha256="0" * 64)),
                 second: distribute.worker_settings(TrainConfig(), DATA)}
    end = ("; start every worker with the same flags (only --data_dir, --[no]download and --startup_timeout may "
           "differ: the data is compared by its SHA-256)")
    # Worker 2 agrees with the chief, yet stops too: worker 1's collectives would otherwise wait for it.
    assert distribute.disagreement(chief, second, published) == (
        "the workers were started with different settings: worker 0 (127.0.0.1:1111), the chief, has --arch=mnist_cnn, "
        "--learning_rate=0.001, --batch_size=128, --train_steps=0 and 3 more settings; worker 1 (127.0.0.1:2222) "
        "has --arch=c4k3-m2-d16, --learning_rate=0.01, --batch_size=64, --train_steps=5 and 3 more settings" + end)
    published[first] = distribute.worker_settings(TrainConfig(seed=1), dict(DATA, sha256="0" * 64, source="/b"))
    assert distribute.disagreement(chief, chief, published) == (
        "the workers were started with different settings: worker 0 (127.0.0.1:1111), the chief and this worker, "
        "has --seed=0, data of SHA-256 7cd153065534 (/a/mnist.npz); worker 1 (127.0.0.1:2222) has --seed=1, data of "
        "SHA-256 000000000000 (/b)" + end)
    assert distribute.disagreement(chief, first, published).split(";")[1] == (
        " worker 1 (127.0.0.1:2222), this worker, has --seed=1, data of SHA-256 000000000000 (/b)")


@pytest.mark.slow
def test_workers_started_with_different_settings_all_stop_with_one_line(tmp_path, tiny_mnist_dir, tiny_arrays):
    other_data = tmp_path / "other_data"
    other_data.mkdir()
    np.savez(other_data / "mnist.npz", **dict(tiny_arrays, x_train=255 - tiny_arrays["x_train"]))
    other_sha = data_lib.fingerprint(data_lib.load("mnist", str(other_data)))["sha256"]
    cluster = [f"127.0.0.1:{port}" for port in free_ports(2)]
    common = ["--train_steps=20", f"--startup_timeout={START_SECONDS}"]  # the command line's rate: 0.003
    workers = [start_train(tmp_path, "chief", tf_config(cluster, 0), f"--data_dir={tiny_mnist_dir}", *common,
                           logdir=tmp_path / "run"),
               start_train(tmp_path, "other", tf_config(cluster, 1), f"--data_dir={other_data}", "--seed=1",
                           "--learning_rate=0.01", *common, logdir=tmp_path / "run")]
    try:
        for worker in workers:
            try:
                worker.wait(timeout=START_SECONDS)
            except subprocess.TimeoutExpired:
                pytest.fail(f"{worker.name} still running after {START_SECONDS} s; output:\n{tail(worker.log_path)}")
    finally:
        for worker in workers:
            stop(worker)
    values = [f"has --learning_rate=0.003, --seed=0, data of SHA-256 7cd153065534 ({tiny_mnist_dir / 'mnist.npz'})",
              f"has --learning_rate=0.01, --seed=1, data of SHA-256 {other_sha[:12]} ({other_data / 'mnist.npz'})"]
    for worker, roles in zip(workers, (("the chief and this worker", "worker 1"), ("the chief", "this worker"))):
        output = worker.log_path.read_text(errors="replace")
        assert worker.returncode == 1, output
        assert error_lines(output) == [
            f"train: error: the workers were started with different settings: worker 0 ({cluster[0]}), {roles[0]}, "
            f"{values[0]}; worker 1 ({cluster[1]}){', ' + roles[1] + ',' if roles[1] == 'this worker' else ''} "
            f"{values[1]}; start every worker with the same flags (only --data_dir, --[no]download and "
            f"--startup_timeout may differ: the data is compared by its SHA-256)"], output
        assert "Traceback" not in output
    assert not (tmp_path / "run").exists()  # the chief's failed start left no run
    assert [path.name for path in (tmp_path / "tmp-other").iterdir() if path.name.startswith("worker-")] == []
