"""A profiled run records its chosen steps as steps, and TensorBoard serves its scalars and profile.

One tiny run (in this process, default strategy) profiles steps 3 to 5 of 6; the tests read its XSpace
protobuf directly, then through a real TensorBoard server on a free localhost port. A damaged profile, and
``experiments.op_time``'s flags, are checked on tiny hand-made sessions without it.
"""

import gzip
import json
import random
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
import tensorflow as tf
from conftest import REPO_ROOT

from experiments import profile_stats
from training import trainer
from training.config import TrainConfig
from training.profiling import StepProfiler

PROFILE_STEPS = (3, 5)
TRAIN_STEPS = 6
LOG_EVERY = 3  # train/ and eval/ scalars at steps 3 and 6
# TensorBoard imports TensorFlow and the profile plugin before it answers: ~4 s idle, more on a busy machine.
TENSORBOARD_START_SECONDS = 90
TENSORBOARD_STOP_SECONDS = 20


@pytest.fixture(scope="module")
def profiled_run(tmp_path_factory, tiny_mnist):
    logdir = tmp_path_factory.mktemp("profiled") / "run"
    config = TrainConfig(dataset="mnist", allow_download=False, arch="c4k3-m2-d16", batch_size=32,
                         eval_batch_size=128, train_steps=TRAIN_STEPS, log_every=LOG_EVERY, eval_every=LOG_EVERY,
                         steps_per_loop=10, profile_steps=PROFILE_STEPS, logdir=str(logdir), seed=0)
    trainer.train(config, dataset=tiny_mnist)
    return logdir


def xplane_pb2():
    try:
        from tsl.profiler.protobuf import xplane_pb2 as module
    except ImportError:
        from tensorflow.tsl.profiler.protobuf import xplane_pb2 as module
    return module


def host_events(xspace):
    """``(line, name, stats, start_ps, end_ps)`` of every event on the host plane's lines."""
    (plane,) = [plane for plane in xspace.planes if plane.name == "/host:CPU"]
    event_names = {key: metadata.name for key, metadata in plane.event_metadata.items()}
    stat_names = {key: metadata.name for key, metadata in plane.stat_metadata.items()}
    events = []
    for line in plane.lines:
        for event in line.events:
            stats = {stat_names[stat.metadata_id]: getattr(stat, stat.WhichOneof("value")) for stat in event.stats}
            start = line.timestamp_ns * 1000 + event.offset_ps
            events.append((line.id, event_names[event.metadata_id], stats, start, start + event.duration_ps))
    return events


def test_profile_holds_one_session_with_an_xspace(profiled_run):
    (session,) = profile_stats.profile_sessions(profiled_run)
    assert len(list(session.glob("*.xplane.pb"))) == 1


def test_profiled_steps_are_marked_as_steps(profiled_run):
    (session,) = profile_stats.profile_sessions(profiled_run)
    (path,) = session.glob("*.xplane.pb")
    xspace = xplane_pb2().XSpace()
    xspace.ParseFromString(path.read_bytes())
    events = host_events(xspace)
    steps = [event for event in events if event[1] == "train"]
    # Trace("train", step_num=s, _r=1): _r=1 marks a root event, which the profiler's step grouping starts from
    # when the trace holds no TensorFlow loop (see the overview page tests below).
    assert sorted(stats["step_num"] for _, _, stats, _, _ in steps) == [3, 4, 5]
    assert all(stats.get("_r") == 1 for _, _, stats, _, _ in steps)
    # Each profiled step is its own call of the compiled loop, inside its step marker; steps 1, 2 and 6 ran
    # outside the trace.
    loop_calls = [event for event in events if event[1] == "train_loop"]
    assert len(loop_calls) == 3
    for line, _, stats, start, end in steps:
        inside = [call for call in loop_calls if call[0] == line and start <= call[3] and call[4] <= end]
        assert len(inside) == 1, f"step {stats['step_num']}: {len(inside)} train_loop calls inside"


def test_profiled_steps_run_one_per_call():
    profiler = StepProfiler("unused", 3, 5)
    calls, step = [], 0
    while step < 12:
        num_steps = profiler.steps_before_boundary(step, min(10, 12 - step))
        calls.append((step + 1, step + num_steps))
        step += num_steps
    # Step 2 runs alone too: it traces the one-step call before the profile starts.
    assert calls == [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (6, 12)]
    assert [profiler.runs_alone(step) for step in range(1, 8)] == [False, True, True, True, True, False, False]


# --- The overview page's steps on a CPU ------------------------------------------------------------------

cpu_only = pytest.mark.skipif(bool(tf.config.list_physical_devices("GPU")),
                              reason="with a GPU, the profile tool takes its steps from the device's events")


@cpu_only
def test_on_a_cpu_the_overview_page_counts_each_profiled_step_of_a_run(profiled_run, tmp_path):
    # The profiled steps run unrolled, without the train loop's TensorFlow while loop, so the profile tool groups
    # events from the step markers (README, Profiling).
    (session,) = profile_stats.profile_sessions(profiled_run)
    steps = profile_stats.step_seconds(session)
    assert sorted(steps) == ["train 3", "train 4", "train 5"]
    assert all(seconds > 0 for seconds in steps.values()), steps


@cpu_only
def test_on_a_cpu_the_overview_page_counts_the_markers_around_a_call_without_a_loop(tmp_path):
    weights = tf.Variable(tf.ones((64, 64)) / 64)
    inputs = tf.random.stateless_normal((32, 64), seed=(0, 0))

    @tf.function
    def step():
        weights.assign_sub(1e-3 * tf.matmul(inputs, tf.tanh(tf.matmul(inputs, weights)), transpose_a=True))
        return tf.reduce_sum(weights)

    profiler = StepProfiler(str(tmp_path / "run"), 3, 5)
    for number in range(1, 7):
        with profiler.around(number):
            step().numpy()
    (session,) = profile_stats.profile_sessions(tmp_path / "run")
    steps = profile_stats.step_seconds(session)
    assert sorted(steps) == ["train 3", "train 4", "train 5"]
    assert all(seconds > 0 for seconds in steps.values()), steps


def test_a_trace_that_could_not_be_written_whole_is_removed_and_earlier_sessions_kept(tmp_path, monkeypatch):
    logdir = tmp_path / "run"
    earlier = logdir / "plugins" / "profile" / "2026_01_01_00_00_00"
    earlier.mkdir(parents=True)
    (earlier / "host.xplane.pb").write_bytes(b"an earlier start's trace")
    real_stop = tf.profiler.experimental.stop

    def stop_on_a_full_disk():
        real_stop()  # the session's files are on disk, as far as a full disk let them be written
        raise tf.errors.ResourceExhaustedError(None, None, "No space left on device")

    monkeypatch.setattr(tf.profiler.experimental, "stop", stop_on_a_full_disk)
    profiler = StepProfiler(str(logdir), 1, 1)
    with pytest.raises(tf.errors.ResourceExhaustedError, match="No space left"):
        with profiler.around(1):
            tf.reduce_sum(tf.ones((8, 8))).numpy()
    assert profile_stats.profile_sessions(logdir) == [earlier]
    assert (earlier / "host.xplane.pb").read_bytes() == b"an earlier start's trace"


# --- A real TensorBoard server --------------------------------------------------------------------------

def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_bytes(port, path, timeout=30):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as response:
        body = response.read()
        if response.headers.get("Content-Encoding") == "gzip":  # the profile plugin compresses its answers
            body = gzip.decompress(body)
    return body


def get_json(port, path, timeout=30):
    return json.loads(get_bytes(port, path, timeout))


@pytest.fixture
def tensorboard(profiled_run, tmp_path):
    """A TensorBoard server over the profiled run; yields its port, and always stops it."""
    port = free_port()
    log = open(tmp_path / "tensorboard.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(profiled_run), "--port",
                               str(port), "--host", "127.0.0.1", "--load_fast=false"],
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + TENSORBOARD_START_SECONDS
        while True:
            if server.poll() is not None:
                output = (tmp_path / "tensorboard.log").read_text()
                pytest.fail(f"TensorBoard exited with {server.returncode}: {output}")
            try:
                get_json(port, "/data/runs", timeout=5)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    pytest.fail(f"TensorBoard did not answer within {TENSORBOARD_START_SECONDS} s")
                time.sleep(0.5)
        yield port
    finally:
        server.terminate()
        try:
            server.wait(timeout=TENSORBOARD_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


@pytest.mark.slow
def test_tensorboard_serves_the_scalars_and_the_profile(profiled_run, tensorboard):
    port = tensorboard
    assert sorted(get_json(port, "/data/runs")) == [".", "eval", "train"]  # ".": the run's hparams
    tags = get_json(port, "/data/plugin/scalars/tags")
    assert sorted(tags["train"]) == ["accuracy", "images_per_second", "learning_rate", "loss"]
    assert sorted(tags["eval"]) == ["accuracy", "loss"]
    # Each point is [wall_time, step, value].
    assert [point[1] for point in get_json(port, "/data/plugin/scalars/scalars?run=train&tag=loss")] == [3, 6]
    assert [point[1] for point in get_json(port, "/data/plugin/scalars/scalars?run=eval&tag=accuracy")] == [3, 6]

    (session,) = profile_stats.profile_sessions(profiled_run)
    assert get_json(port, "/data/plugin/profile/runs") == [session.name]
    tools = get_json(port, f"/data/plugin/profile/run_tools?run={session.name}")
    assert {"overview_page", "trace_viewer@"} <= set(tools), tools
    (host,) = session.glob("*.xplane.pb")
    hosts = get_json(port, f"/data/plugin/profile/hosts?run={session.name}&tag=overview_page")
    assert [entry["hostname"] for entry in hosts] == [host.name[:-len(".xplane.pb")]]

    # The trace viewer works offline (the Profile tab's page first loads Google Charts from www.gstatic.com):
    # its page and script are served by TensorBoard, and so is the trace it reads, at the address the page's
    # trace_data_url names (README, Profiling).
    trace_data = f"/data/plugin/profile/data?run={session.name}&tag=trace_viewer@&host={hosts[0]['hostname']}"
    viewer = ("/data/plugin/profile/trace_viewer_index.html?is_streaming=true&is_oss=true&trace_data_url="
              + urllib.parse.quote(trace_data, safe=""))
    assert b'<script src="trace_viewer_index.js">' in get_bytes(port, viewer)
    trace = get_json(port, trace_data, timeout=60)
    assert {"train 3", "train 4", "train 5"} <= {event.get("name") for event in trace["traceEvents"]}


@cpu_only
def test_op_time_sums_each_op_types_self_time_and_reads_the_step_times(profiled_run):
    (session,) = profile_stats.profile_sessions(profiled_run)
    idle, shares = profile_stats.op_time_shares(session)
    kinds = [kind for kind, _, _ in shares]
    # The tiny net's conv has a bias and a ReLU, which TensorFlow fuses into one _FusedConv2D op. Where oneDNN is on
    # (Intel CPUs by default) the ops carry its names: _MklNativeFusedConv2D, _MklNativeConv2DBackpropFilterWithBias.
    assert any(re.fullmatch(r"(_MklNative)?_?FusedConv2D", kind) for kind in kinds), kinds
    assert any(re.fullmatch(r"(_MklNative)?Conv2DBackpropFilter(WithBias)?", kind) for kind in kinds), kinds
    assert profile_stats.IDLE not in kinds
    assert sum(share for _, _, share in shares) == pytest.approx(1.0, abs=1e-9)
    assert all(seconds > 0 for _, seconds, _ in shares) and idle >= 0
    steps = profile_stats.step_seconds(session)
    assert sorted(steps) == ["train 3", "train 4", "train 5"] and all(s > 0 for s in steps.values())
    table = profile_stats.format_shares(idle, shares, steps, 2, top=2)
    assert table.splitlines()[2].startswith(f"| {kinds[0]} | ") and "3 profiled steps took" in table


@cpu_only
def test_op_time_prints_the_overview_pages_step_time_breakdown(profiled_run):
    (session,) = profile_stats.profile_sessions(profiled_run)
    categories, steps, summary = profile_stats.step_breakdown(session)
    # On a CPU the time is the host's: no device compute or device communication; parts that are 0 in every step
    # are left out.
    assert "Host compute" in categories and not any(label.startswith("Device") for label in categories)
    assert [name for name, _, _ in steps] == ["train 3", "train 4", "train 5"]
    for _, parts, total in steps:
        assert len(parts) == len(categories) and sum(parts) == pytest.approx(total, rel=0.01)
    assert summary["hardware"] == "CPU_ONLY" and summary["minimum"] <= summary["average"] <= summary["maximum"]
    text = profile_stats.format_breakdown(categories, steps, summary).splitlines()
    assert text[0].startswith("Step time (CPU_ONLY): ") and " on average over 3 profiled steps (" in text[0]
    assert text[2] == "| step | step time ms | " + " | ".join(f"{label} ms" for label in categories) + " |"
    assert [line.split(" | ")[0] for line in text[4:8]] == ["| train 3", "| train 4", "| train 5", "| mean"]


# --- A profile that cannot be read, and op_time's flags -----------------------------------------------------

# op_time imports TensorFlow through the profile plugin before it reads a session (3-10 s on a loaded machine).
OP_TIME_TIMEOUT_SECONDS = 120
USAGE_ERROR = 2  # absl's status for a flag refused at parse time; an error while running exits with 1


def one_plane_xspace():
    """A small whole XSpace: one host plane with one event."""
    pb2 = xplane_pb2()
    event = pb2.XEvent(metadata_id=1, offset_ps=0, duration_ps=10)
    return pb2.XSpace(planes=[pb2.XPlane(id=1, name="/host:CPU", lines=[pb2.XLine(id=1, events=[event])])])


def session_holding(tmp_path, xplane_bytes):
    session = tmp_path / "run" / "plugins" / "profile" / "2026_01_01_00_00_00"
    session.mkdir(parents=True)
    (session / "host.xplane.pb").write_bytes(xplane_bytes)
    return session


DAMAGED = {
    "random": (random.Random(0).randbytes(100), "its host.xplane.pb is damaged"),
    # What a kill -9 while the profiler writes leaves: a whole XSpace cut short.
    "truncated": (one_plane_xspace().SerializeToString()[:15], "its host.xplane.pb is damaged"),
    "empty": (b"", "its host.xplane.pb is empty"),
}


@pytest.mark.parametrize("kind", DAMAGED)
def test_a_damaged_or_empty_profile_is_one_error_naming_its_session(tmp_path, kind):
    xplane_bytes, why = DAMAGED[kind]
    session = session_holding(tmp_path, xplane_bytes)
    for read in (profile_stats.op_time_shares, profile_stats.step_breakdown):
        with pytest.raises(profile_stats.ProfileError) as raised:
            read(session)
        assert str(raised.value) == f"{session}: no readable profile ({why})"


@pytest.mark.parametrize("converter_says", ["nothing", "an exception"])
def test_a_profile_the_converter_cannot_read_is_one_error_naming_its_session(tmp_path, monkeypatch, converter_says):
    from tensorboard_plugin_profile import convert

    def convert_nothing(paths, tool, params):
        return None, "application/json"  # what the converter returns when it cannot read an XSpace

    def convert_raising(paths, tool, params):
        raise RuntimeError("converter failed\nwith a second line")

    monkeypatch.setattr(convert.raw_to_tool_data, "xspace_to_tool_data",
                        convert_nothing if converter_says == "nothing" else convert_raising)
    session = session_holding(tmp_path, one_plane_xspace().SerializeToString())
    with pytest.raises(profile_stats.ProfileError) as raised:
        profile_stats.op_time_shares(session)
    why = "" if converter_says == "nothing" else ": converter failed"
    assert str(raised.value) == (
        f"{session}: no readable profile (the profile converter cannot read its host.xplane.pb{why})")


def _op_time(*args):
    return subprocess.run([sys.executable, "-m", "experiments.op_time", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=OP_TIME_TIMEOUT_SECONDS)


@pytest.mark.parametrize("earlier", [False, True])
def test_op_time_on_a_damaged_profile_fails_in_one_line_naming_the_session(tmp_path, earlier):
    session = session_holding(tmp_path, DAMAGED["random"][0])
    hint = ""
    if earlier:  # op_time reads the newest session only; the message says how to read the one before
        (session.parent / "2025_12_31_00_00_00").mkdir()
        hint = "; move it out of plugins/profile/ to read the one before, 2025_12_31_00_00_00"
    process = _op_time(f"--logdir={tmp_path / 'run'}")
    assert process.returncode == 1 and "Traceback" not in process.stderr
    assert process.stdout == ""
    assert "Can't parse" not in process.stderr  # the converter's own line, naming its temporary copy
    assert process.stderr.splitlines()[-1] == (
        f"op_time: error: {session}: no readable profile (its host.xplane.pb is damaged){hint}")


@pytest.mark.parametrize("top", ["0", "-1"])
def test_op_time_refuses_a_top_below_one_at_parse_time(tmp_path, top):
    # --top=-1 once listed all but the last op type and summed "-1 other op types".
    process = _op_time(f"--logdir={tmp_path}", f"--top={top}")
    assert process.returncode == USAGE_ERROR and "Traceback" not in process.stderr
    assert process.stderr.splitlines()[-1] == f"op_time.py: error: flag --top={top}: --top must be a positive integer"
