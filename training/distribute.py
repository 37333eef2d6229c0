"""Devices and ``tf.distribute`` strategies, from plain arguments.

Every strategy runs the same training loop. On a machine without GPUs, ``mirrored`` runs over logical CPU
devices (``configure_devices(num_cpu_devices=N)``), which is how the multi-device paths are tested here.
"""

import contextlib
import dataclasses
import errno
import hashlib
import itertools
import json
import os
import re
import signal
import socket
import threading
import time

import numpy as np
import tensorflow as tf
from absl import logging
from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
from tensorflow.python.eager import context as tf_context

from training import config as config_lib
from training import stopping
from training.choices import STARTUP_TIMEOUT, STRATEGIES
from training.errors import RunError, first_line

PROBE_EVERY = 0.5  # seconds between looks at the ports of the workers still awaited
REPORT_EVERY = 30  # seconds between log lines naming the workers still awaited
REGISTER_TIMEOUT = 120  # seconds for TensorFlow to set up devices and connect the tasks, once all have started
# What a collective op raises when a peer has gone (connection reset, heartbeat timeout, aborted collectives).
LOST_WORKER_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.CancelledError,
                      tf.errors.AbortedError)


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


def make_strategy(name, gpus=None, cpus=None, startup_timeout=STARTUP_TIMEOUT):
    """The ``tf.distribute.Strategy`` called ``name`` (see ``STRATEGIES``).

    ``gpus`` and ``cpus`` are logical device names; by default those TensorFlow sees. ``mirrored`` replicates
    over all GPUs, or over all logical CPUs when there is no GPU. ``multi_worker`` reads the cluster from
    TF_CONFIG and waits up to ``startup_timeout`` seconds for its other workers (``multi_worker_strategy``).
    """
    if name == "multi_worker":
        # Before anything lists logical devices: that starts the runtime, and collectives must be set up first.
        return multi_worker_strategy(startup_timeout)
    with _tf_config_ignored(name):
        return _one_machine_strategy(name, gpus, cpus)


def _one_machine_strategy(name, gpus, cpus):
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


@contextlib.contextmanager
def _tf_config_ignored(name):
    """Hides TF_CONFIG while a strategy of one machine is made, with a warning when it names anything: only
    ``multi_worker`` reads it. ``MirroredStrategy`` parses it (to ignore it) and raises a JSON or attribute error,
    with a traceback, at a stale TF_CONFIG that is not a JSON object."""
    text = os.environ.pop("TF_CONFIG", None)
    if text and text.strip():
        logging.warning("TF_CONFIG is set but ignored: --strategy=%s trains in this process alone (only "
                        "--strategy=multi_worker reads TF_CONFIG); unset it if it is left from another job",
                        name)
    try:
        yield
    finally:
        if text is not None:
            os.environ["TF_CONFIG"] = text


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


def task_name(strategy):
    """``worker-<index>`` (or ``<type>-<index>``) of this process in a multi-worker ``strategy`` (``worker-0``
    under any other): how it names its temporary files. Read from the strategy, since TF_CONFIG is read only
    under multi-worker training, and a stale one may hold anything."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver.task_type is None:
        return "worker-0"
    return f"{resolver.task_type}-{resolver.task_id}"


# --- Multi-worker: the cluster from TF_CONFIG, its start-up, a lost worker -------------------------------------

JOBS = ("chief", "worker")  # the task types of a multi-worker cluster; the chief, else worker 0, leads it
TF_CONFIG_EXAMPLE = '{"cluster": {"worker": ["host1:port", "host2:port"]}, "task": {"type": "worker", "index": 0}}'


@dataclasses.dataclass(frozen=True)
class Task:
    """One task of the cluster, named as log lines and errors name it: ``worker 1 (10.0.0.2:12345)``."""

    job: str
    index: int
    address: str  # host:port, as TF_CONFIG gives it

    def __str__(self):
        return f"{self.job} {self.index} ({self.address})"


def read_tf_config(text):
    """``(tasks, own)`` from the text of TF_CONFIG: every task of the cluster (chief first) and this process's.

    Refuses, with a RunError saying what is wrong, what would otherwise make TensorFlow fail with a traceback or
    wait for a task that cannot come: no TF_CONFIG, invalid JSON, no cluster, no chief or worker task, an
    address that is not host:port or is listed twice, a missing task, a task that is not in the cluster.
    """
    if not text.strip():
        raise RunError(f"--strategy=multi_worker needs TF_CONFIG to name the cluster and this process's task in it, "
                       f"e.g. TF_CONFIG='{TF_CONFIG_EXAMPLE}'")
    try:
        spec = json.loads(text)
    except ValueError as error:
        raise RunError(f"TF_CONFIG is not valid JSON ({error}); expected e.g. {TF_CONFIG_EXAMPLE}") from None
    cluster = spec.get("cluster") if isinstance(spec, dict) else None
    if not isinstance(cluster, dict):
        raise RunError(f'TF_CONFIG has no "cluster"; expected e.g. {TF_CONFIG_EXAMPLE}')
    if set(cluster) - set(JOBS):
        raise RunError(f"TF_CONFIG's cluster has {', '.join(sorted(set(cluster) - set(JOBS)))} tasks; multi-worker "
                       f"training takes chief and worker tasks only")
    tasks = []
    for job in JOBS:
        addresses = cluster.get(job, [])
        if not isinstance(addresses, list):
            raise RunError(f'TF_CONFIG\'s cluster "{job}" must be a list of "host:port" addresses')
        for index, address in enumerate(addresses):
            if not _split_address(address):
                raise RunError(f'TF_CONFIG\'s {job} {index} address {json.dumps(address)} is not "host:port"')
            tasks.append(Task(job, index, address))
    if not tasks:
        raise RunError(f"TF_CONFIG's cluster names no chief or worker task; expected e.g. {TF_CONFIG_EXAMPLE}")
    if len(cluster.get("chief", [])) > 1:
        raise RunError(f"TF_CONFIG's cluster has {len(cluster['chief'])} chiefs; a cluster has at most one")
    seen = {}
    for task in tasks:
        if task.address in seen:
            raise RunError(f"TF_CONFIG's cluster gives {seen[task.address].job} {seen[task.address].index} and "
                           f"{task.job} {task.index} the same address {task.address}; give each task its own port")
        seen[task.address] = task
    task = spec.get("task")
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise RunError('TF_CONFIG has no "task" saying which task of the cluster this process is, e.g. '
                       '"task": {"type": "worker", "index": 0}')
    job, index = task["type"], task["index"]
    own = next((t for t in tasks if (t.job, t.index) == (job, index)), None)
    if own is None or type(index) is not int:  # 1.0 and True equal 1 but are no index
        jobs = ", ".join(f"{name} 0-{len(cluster[name]) - 1}" for name in JOBS if cluster.get(name))
        raise RunError(f"TF_CONFIG's task {json.dumps(job)} {json.dumps(index)} is not in the cluster, which has "
                       f"{jobs}")
    return tasks, own


def multi_worker_strategy(startup_timeout=STARTUP_TIMEOUT):
    """``MultiWorkerMirroredStrategy`` over TF_CONFIG's cluster, or a RunError when the cluster does not form
    within ``startup_timeout`` seconds or SIGINT/SIGTERM arrives meanwhile.

    TensorFlow forms the cluster inside one C++ call that holds the interpreter lock until every task has
    registered, for up to an hour: no Python signal handler runs meanwhile, and TensorFlow's preemption notifier
    takes SIGTERM over. So the waiting happens here first, in Python (``wait_for_tasks``). TensorFlow's
    registration, once every task has been seen, takes seconds; ``REGISTER_TIMEOUT`` bounds it when a task dies
    in between.
    """
    tasks, own = read_tf_config(os.environ.get("TF_CONFIG", ""))
    awaited = [task for task in tasks if task != own]
    with _stop_on_signals(awaited):
        wait_for_tasks(own, awaited, startup_timeout)
        _configure_coordination(tasks, register_seconds=REGISTER_TIMEOUT)
        try:
            return tf.distribute.MultiWorkerMirroredStrategy()
        except tf.errors.OpError as error:
            raise RunError(f"the cluster of TF_CONFIG did not form: {first_line(error)}") from None


def lost_worker(error):
    """The RunError for a collective ``error`` (one of ``LOST_WORKER_ERRORS``) raised because another task of the
    cluster is gone: one line naming the task and the cause, instead of TensorFlow's fifty."""
    tasks, own = read_tf_config(os.environ.get("TF_CONFIG", ""))
    by_name = {(task.job, task.index): task for task in tasks}
    named = [by_name.get((job, int(index))) for job, index in re.findall(r"/job:(\w+)/replica:\d+/task:(\d+)",
                                                                        error.message)]
    lost = next((task for task in named if task is not None and task != own), None)
    cause = re.search(r"aborted by: (.+)", error.message)
    cause = cause.group(1).strip() if cause else first_line(error)
    return RunError(f"{lost or 'another task of the cluster'} lost: {cause[:200]}; the run stopped, restart every "
                    f"task to resume from the last checkpoint")


# --- Multi-worker: every worker runs the same settings on the same data ---------------------------------------

# Settings that may differ between the workers of one run: where each machine keeps its copy of the data and
# whether it may download it (the data itself is compared, by its SHA-256), and how long it waited for the
# others at start-up (spent before the comparison). Any other difference changes the computation or the number
# of collective calls (budgets, intervals, the run directory each worker restores from).
PER_WORKER = ("data_dir", "allow_download", "startup_timeout")
SETTINGS_KEY = "cnn-lab/settings"  # key prefix in the coordination service's key-value store
SHOWN_DIFFERENCES = 4  # settings named in the one line; the rest are counted
_exchanges = itertools.count()  # a fresh key per comparison, in the order every worker makes them


def check_workers_agree(strategy, config, data):
    """Stops every worker of a multi-worker ``strategy`` with a RunError naming the settings that differ, with the
    chief's values and another worker's (this one's, when it differs), unless all run ``config`` alike (but
    ``PER_WORKER``) on data of the same SHA-256 (``data``, a ``training.data.fingerprint``). Any other strategy:
    nothing to compare.

    Each worker publishes its settings in the coordination service's key-value store, then all-gathers their
    SHA-256 (one collective, which also ends, as a lost worker, when another task has died); only when the hashes
    differ are the others' settings read, all published by then.
    """
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return
    tasks, own = read_tf_config(os.environ.get("TF_CONFIG", ""))
    key = f"{SETTINGS_KEY}/{next(_exchanges)}"
    mine = worker_settings(config, data)
    context = tf_context.context()
    context.set_config_key_value(f"{key}/{own.job}/{own.index}", json.dumps(mine))
    digests = _all_gathered(strategy, _digest(mine["settings"]))
    if (digests == digests[0]).all():
        return
    published = {task: mine if task == own else _published(context, f"{key}/{task.job}/{task.index}", task)
                 for task in tasks}
    raise RunError(disagreement(tasks[0], own, published))


def worker_settings(config, data):
    """What this worker publishes: ``{"settings": {name: value}, "data_source": ...}``, its settings but
    ``PER_WORKER``'s, with the SHA-256 of its data as ``data``; the source only names the data in messages."""
    settings = {name: value for name, value in config_lib.as_json(config).items() if name not in PER_WORKER}
    return {"settings": dict(settings, data=data["sha256"]), "data_source": data["source"]}


def disagreement(chief, own, published):
    """The one line of a cluster whose workers' ``published`` settings (``{task: worker_settings(...)}``) differ:
    the chief's values beside those of this worker (``own``) when it differs from the chief, else of the first
    worker that does."""
    other = own if published[own]["settings"] != published[chief]["settings"] else \
        next(task for task, theirs in published.items() if theirs["settings"] != published[chief]["settings"])
    names = _differences(published[chief]["settings"], published[other]["settings"])
    shown = names[:SHOWN_DIFFERENCES]
    more = f" and {len(names) - len(shown)} more settings" if len(names) > len(shown) else ""

    def values(task):
        return ", ".join(_shown_setting(name, published[task]) for name in shown) + more

    def who(task):
        roles = [role for role, holds in (("the chief", task == chief), ("this worker", task == own)) if holds]
        return f"{task}, {' and '.join(roles)}," if roles else str(task)

    return (f"the workers were started with different settings: {who(chief)} has {values(chief)}; {who(other)} "
            f"has {values(other)}; start every worker with the same flags (only --data_dir, --[no]download and "
            f"--startup_timeout may differ: the data is compared by its SHA-256)")


def _differences(chief_settings, other_settings):
    """Names of the settings that differ, in the chief's order (a name only one side knows counts too)."""
    names = list(chief_settings) + [name for name in other_settings if name not in chief_settings]
    return [name for name in names if chief_settings.get(name) != other_settings.get(name)]


def _shown_setting(name, published):
    value = published["settings"].get(name)
    if name == "data":
        return f"data of SHA-256 {str(value)[:12]} ({published['data_source']})"
    flags = {field.name: field.metadata["flag"] or field.name for field in config_lib.fields()}
    return f"--{flags.get(name, name)}={'(none)' if value is None else value}"


def _digest(settings):
    """The SHA-256 of ``settings`` as 8 int32s, for a collective to gather."""
    text = json.dumps(settings, sort_keys=True)
    return np.frombuffer(hashlib.sha256(text.encode()).digest(), dtype=np.int32)


def _all_gathered(strategy, digest):
    """Every replica's copy of ``digest`` (8 int32s), from every worker: an array (replicas, 8)."""
    values = strategy.experimental_distribute_values_from_function(lambda _: tf.constant(digest[np.newaxis]))
    return strategy.gather(values, axis=0).numpy()


def _published(context, key, task):
    """What ``task`` published under ``key``; it did before the collective that preceded this, so no wait."""
    try:
        return json.loads(context.get_config_key_value(key, timeout_in_ms=10_000))
    except tf.errors.OpError as error:
        raise RunError(f"the workers were started with different settings, and those of {task} cannot be read "
                       f"({first_line(error)}); start every worker with the same flags") from None


@contextlib.contextmanager
def _stop_on_signals(awaited):
    """While the cluster forms, SIGINT and SIGTERM raise a RunError naming the tasks still ``awaited`` (a list the
    start-up updates). The earlier handlers come back after, which takes SIGTERM back from TensorFlow's
    preemption notifier: a multi-worker run then ends on SIGTERM as any other run does. Signals ignored at
    start (a background job) stay ignored; outside the main thread, where Python sets no handlers, nothing
    changes."""

    def stop(number, frame):
        waiting = f"while waiting for {_names(awaited)}" if awaited else "while the cluster was forming"
        raise RunError(f"stopped by {signal.Signals(number).name} {waiting}")

    with stopping.handling_stop_signals(stop):
        yield


def wait_for_tasks(own, awaited, timeout):
    """Returns once every task in ``awaited`` has been seen listening at its address, taking each off the list as
    it is seen; raises a RunError naming the others after ``timeout`` seconds.

    Meanwhile ``own``'s port is held open, so that the other tasks, waiting the same way, see this one; it is
    closed (and TensorFlow's server takes the port) only once every other task has been seen. A task that
    joins later sees the first one's TensorFlow server instead.
    """
    if not awaited:
        return
    logging.info("%s: waiting up to %d s for %s to start", own, timeout, _names(awaited))
    deadline = time.monotonic() + timeout
    impostors = {}  # task -> a look found another process at its address
    with _own_port(own) as server, _answering(server):
        next_report = time.monotonic() + REPORT_EVERY
        while True:
            seen = {task: _listening(task.address) for task in awaited}
            for task, what in seen.items():
                if what == "other" and task not in impostors:
                    logging.warning("%s: a process that is not a task of this cluster answers at %s; waiting for the "
                                    "task itself", own, task.address)
                impostors[task] = what == "other" or (impostors.get(task, False) and what is None)
            awaited[:] = [task for task in awaited if seen[task] != "task"]
            if not awaited:
                break
            now = time.monotonic()
            if now >= deadline:
                foreign = [task for task in awaited if impostors.get(task)]
                if foreign:
                    raise RunError(f"a process that is not a task of this cluster listens at the address of "
                                   f"{_names(foreign)}; stop it, or give that task another port in TF_CONFIG")
                raise RunError(f"{_names(awaited)} did not start within --startup_timeout={timeout} s; start every "
                               f"task of TF_CONFIG's cluster, each with its own task index")
            if now >= next_report:
                logging.info("still waiting for %s (%d s left)", _names(awaited), deadline - now)
                next_report += REPORT_EVERY
            time.sleep(PROBE_EVERY)
    logging.info("%s: every task of the cluster has started", own)


@contextlib.contextmanager
def _own_port(task):
    """A socket listening at ``task``'s address; at its port on every interface (as TensorFlow's server listens)
    when the host is not one of this machine's addresses (behind NAT, say) or does not resolve here."""
    host, port = _split_address(task.address)
    for address in ((host, port), ("", port)):
        try:
            server = socket.create_server(address, family=socket.AF_INET6 if ":" in address[0] else socket.AF_INET)
            break
        except OSError as error:
            if error.errno in (errno.EADDRINUSE, errno.EACCES) or not address[0]:
                raise RunError(f"{task}: port {port} cannot be opened ({os.strerror(error.errno)}); another process "
                               f"may be using it: stop it or give this task another port in TF_CONFIG") from None
    with server:
        server.setblocking(False)
        yield server


# What a task waiting for the others answers on its port, so that they know it from any other listener.
GREETING = b"cnn-lab task waiting\n"
# An HTTP/2 client's connection preface and an empty SETTINGS frame: TensorFlow's gRPC server, which takes a
# task's port once the task has started, answers with a frame of its own, the first of type SETTINGS (4).
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
HTTP2_SETTINGS = 4
ANSWER_SECONDS = 2.0  # a waiting task answers within one ANSWER_EVERY; a gRPC server at once
ANSWER_EVERY = 0.05  # seconds between a waiting task's answers to the looks that reached it


@contextlib.contextmanager
def _answering(server):
    """Answers the other tasks' looks at ``server`` from a thread of its own, every ``ANSWER_EVERY`` seconds, while
    the body runs. Answered between this task's own looks instead, two tasks looking at each other at the same
    moment would each wait for the other's answer, time out, and take the other for a foreign process."""
    done = threading.Event()

    def answer():
        while not done.wait(ANSWER_EVERY):
            _close_connections(server)

    thread = threading.Thread(target=answer, name="answer-task-looks", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def _close_connections(server):
    """Accepts the connections waiting on ``server`` (other tasks' looks), answers each with ``GREETING`` and
    closes it, so the queue never fills and the others know this is a task."""
    with contextlib.suppress(BlockingIOError):
        while True:
            connection = server.accept()[0]
            with connection, contextlib.suppress(OSError):
                connection.setblocking(True)
                connection.settimeout(0.2)
                connection.sendall(GREETING)


def _listening(address):
    """"task" when a task of the cluster listens at ``address`` (waiting: its greeting; started: TensorFlow's
    gRPC server), "other" when another process does, None when nothing does."""
    try:
        with socket.create_connection(_split_address(address), timeout=1) as connection:
            connection.settimeout(ANSWER_SECONDS)
            with contextlib.suppress(OSError):
                connection.sendall(HTTP2_PREFACE)
            answer = _read_up_to(connection, len(GREETING))
    except OSError:
        return None
    if answer.startswith(GREETING) or (len(answer) >= 4 and answer[3] == HTTP2_SETTINGS):
        return "task"
    return "other"


def _read_up_to(connection, size):
    """Up to ``size`` bytes from ``connection``, fewer when it closes or goes quiet for its timeout."""
    answer = b""
    with contextlib.suppress(OSError):
        while len(answer) < size:
            chunk = connection.recv(size - len(answer))
            if not chunk:
                break
            answer += chunk
    return answer


def _configure_coordination(tasks, register_seconds):
    """Configures TensorFlow's coordination service as MultiWorkerMirroredStrategy does (it keeps a configuration
    made before it), adding a deadline to the registration of every task, the leader's included. TensorFlow has
    no public API for this; without it a task waits an hour for a task that never comes."""
    jobs = [coordination_config_pb2.CoordinatedJob(name=job, num_tasks=sum(task.job == job for task in tasks))
            for job in JOBS if any(task.job == job for task in tasks)]
    context = tf_context.context()
    context.configure_coordination_service(
        service_type="standalone", service_leader=f"/job:{jobs[0].name}/replica:0/task:0",
        cluster_register_timeout_in_ms=int(register_seconds * 1000), coordinated_jobs=jobs)
    context.coordination_service.cluster_register_with_barrier = True  # the leader waits at a barrier, with deadline


def _split_address(address):
    """``(host, port)`` of a ``host:port`` (``[v6]:port``) string, or None when it is not one."""
    if not isinstance(address, str):
        return None
    host, _, port = address.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host, int(port)


def _names(tasks):
    return ", ".join(map(str, tasks))
