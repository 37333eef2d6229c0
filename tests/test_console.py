"""The main job's console: TensorFlow's harmless start-up notices are dropped, everything else gets through.

The filter itself is tested on its own (which lines it drops, and that a crash loses no line); then the real
``python3 -m training.train`` runs twice side by side, as a user runs it (no TF_CPP_MIN_LOG_LEVEL): a tiny run,
whose every console line must be this project's, one with ``--verbosity=1``, which shows TensorFlow's lines, and
one stopped by Ctrl-C (SIGINT). Each command imports TensorFlow (seconds), so the same commands also carry the
command line's end-to-end checks: the tiny run's results.json, flags.txt (then rerun from that flagfile) and
closing summary, the refused run's directory left as it was, and the stopped run's one line and exit status.
"""

import concurrent.futures
import json
import logging
import math
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from conftest import CLI_TIMEOUT_SECONDS, REPO_ROOT

from flags import console

# Start-up lines of TensorFlow 2.21 on a CPU-only machine, as printed.
ABSL_NOTICE = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
NO_DRIVER = ("I0000 00:00:1795830545.234473   17551 cudart_stub.cc:31] Could not find cuda drivers on your machine, "
             "GPU will not be used.")
CUINIT = ("E0000 00:00:1795830564.238290   18025 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: "
          "Failed call to cuInit: UNKNOWN ERROR (303)")
CPU_FEATURES = ("I0000 00:00:1795830545.331470   17551 cpu_feature_guard.cc:227] This TensorFlow binary is optimized "
                "to use available CPU instructions in performance-critical operations.")
REBUILD = ("To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with the "
           "appropriate compiler flags.")
# Notices of the CIFAR speed recipe's start (XLA, batch 1024), as printed.
XLA_ASSERT = ("W0000 00:00:1795851884.955578   19637 assert_op.cc:39] Ignoring Assert operator "
              "assert_non_negative/assert_less_equal/Assert/Assert")
LARGE_ALLOCATION = ("W0000 00:00:1795851888.894329   19637 cpu_allocator_impl.cc:82] Allocation of 3687727400 exceeds "
                    "10% of free system memory.")
# Lines that must always get through.
CPP_ERROR = "E0000 00:00:1795830564.300000   18025 some_kernel.cc:12] a real error"
CPP_FATAL = "F0000 00:00:1795830564.400000   18025 some_kernel.cc:34] Check failed: a real failure"
UNKNOWN = "I0000 00:00:1795830545.500000   17551 new_feature.cc:1] a notice nobody has judged yet"
OURS = "01:57:15 step 10/20 (epoch 0.13/0.26): loss 2.1941, accuracy 19.53%, lr 0.001, 4,297 images/s, 0:01 left"


def kept(lines):
    line_filter = console.LineFilter()
    return [line for line in lines if line_filter.keep(line.encode())]


def test_the_start_up_notices_are_dropped_in_the_order_tensorflow_prints_them():
    assert kept([ABSL_NOTICE, NO_DRIVER, CPU_FEATURES, REBUILD, ABSL_NOTICE, NO_DRIVER, CUINIT, OURS]) == [OURS]


def test_the_notices_of_a_compiled_large_batch_step_are_dropped():
    assert kept([XLA_ASSERT, LARGE_ALLOCATION, LARGE_ALLOCATION, OURS]) == [OURS]
    # Only those exact notices: another allocator line is not.
    other = LARGE_ALLOCATION.replace("exceeds 10% of free system memory.", "failed")
    assert kept([other]) == [other]


def test_errors_and_unknown_lines_get_through():
    assert kept([NO_DRIVER, CPP_ERROR, CPP_FATAL, UNKNOWN, "Traceback (most recent call last):", OURS]) == [
        CPP_ERROR, CPP_FATAL, UNKNOWN, "Traceback (most recent call last):", OURS]


def test_a_failed_cuinit_gets_through_where_a_cuda_driver_was_found():
    # Without the "no driver" line first, a failing cuInit is a broken driver: an error the user must see.
    assert kept([CPU_FEATURES, CUINIT]) == [CUINIT]
    assert kept([REBUILD]) == [REBUILD]  # only as the second line of the CPU-features notice


# What TensorFlow logs as a summary flush fails on a full disk (an 8 KiB tmpfs mounted on a run's train/), before
# the job's own line says the same.
EVENTS = "/tmp/r/train/events.out.tfevents.1796666199.vm.27030.0.v2"
FAILED_FLUSH = [f"W0000 00:00:1796666200.924601   27030 op_kernel.cc:1858] OP_REQUIRES failed at "
                f"summary_kernels.cc:114 : RESOURCE_EXHAUSTED: {EVENTS}; No space left on device",
                f"\tFailed to flush 1 events to {EVENTS}", "\tCould not flush events file.",
                f"W0000 00:00:1796666200.924806   27030 local_rendezvous.cc:412] Local rendezvous is aborting with "
                f"status: RESOURCE_EXHAUSTED: {EVENTS}; No space left on device"]


def test_tensorflows_lines_about_a_full_disk_are_left_to_the_jobs_one_line():
    ours = "train: error: cannot write /tmp/r/train (No space left on device): free space on its disk, ..."
    assert kept([*FAILED_FLUSH, ours]) == [ours]
    # Another failure of the same op is the user's to read.
    out_of_memory = FAILED_FLUSH[0].replace(f"{EVENTS}; No space left on device", "OOM when allocating tensor")
    assert kept([out_of_memory, FAILED_FLUSH[1]]) == [out_of_memory, FAILED_FLUSH[1]]


def test_forward_keeps_partial_lines_and_bytes_unchanged():
    source_read, source_write = os.pipe()
    sink_read, sink_write = os.pipe()
    os.write(source_write, f"{NO_DRIVER}\n{CPP_ERROR}\nan unfinished li".encode() + b"\xff")
    os.close(source_write)
    console.forward(source_read, sink_write, console.LineFilter().keep)
    os.close(sink_write)
    assert os.read(sink_read, 1 << 16) == f"{CPP_ERROR}\nan unfinished li".encode() + b"\xff"
    os.close(source_read)
    os.close(sink_read)


_FILTERED_PROCESS = """
import os, signal, sys
from flags import console
console.filter_stderr(console.LineFilter().keep)
for line in sys.argv[2:]:
    os.write(2, line.encode() + b"\\n")
os.write(2, b"a line in ")  # one line in two writes, as C code may write it
os.write(2, b"two writes\\n")
print("from Python", file=sys.stderr)
if sys.argv[1] == "killed":
    os.kill(os.getpid(), signal.SIGKILL)  # as a crash ends the process: no exit handler runs
"""


@pytest.mark.parametrize("ending", ["exit", "killed"])
def test_a_filtered_process_loses_no_line_when_it_exits_or_crashes(ending):
    lines = [ABSL_NOTICE, NO_DRIVER, CPP_ERROR, CPU_FEATURES, REBUILD, CUINIT, CPP_FATAL]
    completed = subprocess.run([sys.executable, "-c", _FILTERED_PROCESS, ending, *lines], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=60)
    assert completed.returncode == (0 if ending == "exit" else -signal.SIGKILL)
    assert completed.stderr.splitlines() == [CPP_ERROR, CPP_FATAL, "a line in two writes", "from Python"]


@pytest.mark.parametrize("argv, verbosity", [
    ([], 0), (["--verbosity=1"], 1), (["-v", "2"], 2), (["--bogus=3", "--v=1", "positional"], 1),
    (["--verbosity=loud"], 0), (["--flagfile={flagfile}"], 1), (["--flagfile={flagfile}", "--verbosity=0"], 0),
])
def test_the_verbosity_is_read_before_the_flags_are_defined(tmp_path, argv, verbosity):
    flagfile = tmp_path / "verbose.cfg"
    flagfile.write_text("--arch=mlp\n--verbosity=1\n")
    argv = [arg.format(flagfile=flagfile) for arg in argv]
    assert console.requested_verbosity(["train.py", *argv]) == verbosity


@pytest.mark.parametrize("path, level, shown", [
    ("training/progress.py", logging.INFO, True),
    ("site-packages/tensorflow/python/checkpoint/functional_saver.py", logging.INFO, False),
    ("site-packages/keras/src/utils/io_utils.py", logging.INFO, False),
    ("site-packages/tensorflow/python/checkpoint/functional_saver.py", logging.WARNING, True),
])
def test_information_is_shown_from_this_project_only(path, level, shown):
    root = REPO_ROOT if path.startswith("training") else "/usr/lib/python3.11"
    record = logging.LogRecord("absl", level, os.path.join(root, path), 1, "message", (), None)
    assert bool(console.only_ours_below_warning(record)) == shown


# --- The real command ---------------------------------------------------------------------------------------

# A line of this project's console: the time, and the level from warnings up (flags/console.py, ShortFormatter).
SHORT_LINE = re.compile(r"\d\d:\d\d:\d\d (warning: |error: )?")
TINY_RUN = ["--arch=c4k3-m2-d16", "--train_steps=20", "--log_every=10", "--checkpoint_every=10", "--nodownload"]
# How long the stopped run may take to reach its first log line (it imports TensorFlow first).
FIRST_LINE_TIMEOUT_SECONDS = 120


@pytest.fixture(scope="module")
def consoles(tmp_path_factory):
    """Runs, side by side, a tiny main job on the bundled data, a ``--verbosity=1`` command that stops at a
    --logdir already in use (after TensorFlow is imported: a refused flag stops before), and a long run that gets
    SIGINT at its first log line; the environment is a user's: no TF_CPP_MIN_LOG_LEVEL, an empty Keras cache."""
    root = tmp_path_factory.mktemp("console")
    (root / "keras_home").mkdir()
    (root / "occupied").mkdir()
    (root / "occupied" / "notes.txt").write_text("an earlier run\n")
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    env["KERAS_HOME"] = str(root / "keras_home")
    commands = {"quiet": [*TINY_RUN, f"--logdir={root / 'run'}"],
                "verbose": ["--verbosity=1", "--noresume", f"--logdir={root / 'occupied'}"],
                "stopped": [*TINY_RUN[:1], "--train_steps=100000", *TINY_RUN[2:], f"--logdir={root / 'stopped'}"]}

    def run(args):
        return subprocess.run([sys.executable, "-m", "training.train", *args], cwd=REPO_ROOT, env=env,
                              capture_output=True, text=True, timeout=CLI_TIMEOUT_SECONDS)

    def run_and_interrupt(args):
        # SIGINT as Ctrl-C sends it; the process gets SIGINT's default handling whatever this one has (a
        # pytest-xdist worker ignores it, and a child inherits that).
        process = subprocess.Popen([sys.executable, "-m", "training.train", *args], cwd=REPO_ROOT, env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # noqa: PLW1509
        lines, deadline = [], time.monotonic() + FIRST_LINE_TIMEOUT_SECONDS
        try:
            while not any(" step 10/" in line for line in lines) and time.monotonic() < deadline:
                line = process.stderr.readline()
                if not line:
                    break
                lines.append(line)
            process.send_signal(signal.SIGINT)
            stdout, rest = process.communicate(timeout=CLI_TIMEOUT_SECONDS)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
        return subprocess.CompletedProcess(process.args, process.returncode, stdout, "".join(lines) + rest)

    with concurrent.futures.ThreadPoolExecutor(len(commands)) as pool:
        futures = {name: pool.submit(run_and_interrupt if name == "stopped" else run, args)
                   for name, args in commands.items()}
        completed = {name: future.result() for name, future in futures.items()}
    return dict(completed, root=root, run=run)


@pytest.mark.slow
def test_every_console_line_of_the_main_job_is_ours_and_short(consoles):
    quiet = consoles["quiet"]
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout == ""
    lines = quiet.stderr.splitlines()
    assert [line for line in lines if not SHORT_LINE.match(line)] == []
    # The one warning: the bundled data's.
    assert [line[9:40] for line in lines if SHORT_LINE.match(line)[1]] == ["warning: full MNIST was neither"]
    assert "training on the bundled subset" in quiet.stderr
    logdir = consoles["root"] / "run"
    # The start line, the first timed call's line, and progress lines with epochs and time left.
    assert lines[2][9:] == (f"{logdir}: new run; 20 steps = 0.26 epochs of 78 steps (batch 128); evaluating at the "
                            "end (10,000 test images)")
    assert re.fullmatch(r"step 2/20 \(epoch 0\.03/0\.26\): compiling took \d+\.\d s; then [\d.]+ m?s a step, "
                        r"[\d,]+ images/s, \d+:\d\d left", lines[3][9:]), lines[3]
    assert re.fullmatch(r"step 20/20 \(epoch 0\.26/0\.26\): loss [\d.]+, accuracy [\d.]+%, lr [\d.e-]+, [\d,]+ "
                        r"images/s, \d+:\d\d left", lines[-4][9:]), lines[-4]


@pytest.mark.slow
def test_the_run_ends_with_a_two_line_summary(consoles):
    results = json.loads((consoles["root"] / "run" / "results.json").read_text())
    *_, first, second = consoles["quiet"].stderr.splitlines()
    assert re.fullmatch(rf"test accuracy {100 * results['test_accuracy']:.2f}%, loss {results['test_loss']:.4f}; "
                        r"20 steps in \d+\.\d s \(\d+\.\d s training\), [\d,]+ images/s", first[9:]), first
    assert second[9:] == f"results: {consoles['root'] / 'run' / 'results.json'}"
    assert "{" not in consoles["quiet"].stderr  # results.json's JSON line is shown with --verbosity=1 only


@pytest.mark.slow
def test_ctrl_c_stops_a_run_with_one_line_and_exit_130(consoles):
    stopped, logdir = consoles["stopped"], consoles["root"] / "stopped"
    assert stopped.returncode == 130, stopped.stderr
    last = stopped.stderr.splitlines()[-1]
    # The steps it was running when the signal came are finished and kept.
    match = re.fullmatch(rf"train: stopped by SIGINT after step (\d+) \(epoch [\d.]+/1282\.1\); the last good "
                         rf"checkpoint {re.escape(str(logdir))}/checkpoints/ckpt-(\d+) is kept, and the same command "
                         r"resumes from it", last)
    assert match and match[1] == match[2], stopped.stderr
    assert (logdir / "checkpoints" / f"ckpt-{match[1]}.index").exists()
    assert "stopped by" not in "".join(stopped.stderr.splitlines()[:-1])  # one line says so
    assert "Traceback" not in stopped.stderr and "error" not in stopped.stderr


@pytest.mark.slow
def test_verbosity_one_shows_tensorflows_own_lines(consoles):
    verbose = consoles["verbose"]
    assert verbose.returncode == 1
    occupied = consoles["root"] / "occupied"  # holds notes.txt only: no run's config.json (training/rundir.py)
    assert verbose.stderr.splitlines()[-1] == (f"train: error: --logdir {occupied} holds files that are not a run of "
                                               "training.train (notes.txt); choose a new --logdir")
    assert ABSL_NOTICE in verbose.stderr.splitlines()


@pytest.mark.slow
def test_a_refused_run_leaves_the_occupied_directory_alone(consoles):
    assert consoles["verbose"].stdout == ""
    occupied = consoles["root"] / "occupied"
    assert sorted(p.name for p in occupied.iterdir()) == ["notes.txt"]
    assert (occupied / "notes.txt").read_text() == "an earlier run\n"


RESULT_KEYS = {"test_accuracy", "test_loss", "train_steps", "wall_seconds", "params", "dataset", "arch", "impl"}
# Evaluating the same restored weights on the same test images twice: identical up to float32 rounding.
SAME_WEIGHTS_LOSS_ATOL = 1e-6


@pytest.mark.slow
def test_the_tiny_run_writes_results_and_reruns_from_its_flagfile(consoles):
    assert consoles["quiet"].returncode == 0, consoles["quiet"].stderr
    logdir = consoles["root"] / "run"
    results = json.loads((logdir / "results.json").read_text())
    assert RESULT_KEYS <= set(results)
    # conv1 3*3*1*4 + 4 = 40; 'same' conv and a 2x2 pool: 14*14*4 = 784 features; dense1 784*16 + 16 = 12,560;
    # logits 16*10 + 10 = 170; total 12,770.
    assert results["params"] == 12_770
    assert results["train_steps"] == 20
    assert (results["dataset"], results["arch"], results["impl"]) == ("mnist", "c4k3-m2-d16", "keras")
    assert results["data_source"] == f"bundled MNIST subset {REPO_ROOT / 'bundled_data' / 'mnist_subset.npz'}"
    # 20 steps already beat the uniform guess's loss of ln 10 = 2.303 (they reach ~2.11, label smoothing included).
    assert 0.0 < results["test_loss"] < math.log(10)
    assert 0.1 < results["test_accuracy"] <= 1.0
    assert results["wall_seconds"] > 0
    assert sorted(p.name for p in (logdir / "checkpoints").glob("ckpt-*.index")) == ["ckpt-10.index", "ckpt-20.index"]

    flags_txt = (logdir / "flags.txt").read_text().splitlines()
    for line in (*TINY_RUN, f"--logdir={logdir}", "--optimizer=adam", "--seed=0"):
        assert line in flags_txt
    assert not any(line.startswith("--epochs") for line in flags_txt)  # only the budget that was used

    again = consoles["run"]([f"--flagfile={logdir}/flags.txt"])
    assert again.returncode == 0, again.stderr
    assert re.search(rf"resumed from {re.escape(str(logdir))}/checkpoints/ckpt-20 at step 20\n", again.stderr)
    rerun = json.loads((logdir / "results.json").read_text())
    assert rerun["train_steps"] == 20
    assert rerun["test_loss"] == pytest.approx(results["test_loss"], abs=SAME_WEIGHTS_LOSS_ATOL)
    assert rerun["test_accuracy"] == results["test_accuracy"]
