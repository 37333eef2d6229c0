"""``python -m training.train`` end to end: bad input fails with one line naming the flag (a tiny run that works,
and one refused at an occupied --logdir, are in tests/test_console.py).

Flag values refused at parse time are all checked in one process that parses them with the real flag
definitions one after another (the message is what ``cli.parse_or_exit`` prints); one also runs as a real
command, to check the printing and the exit status end to end. Neither imports TensorFlow.
"""

import json
import os
import subprocess
import sys

import pytest
from conftest import CLI_TIMEOUT_SECONDS, REPO_ROOT

from flags import cli

# Parse-time errors exit with 2 (absl's usage-error status); errors while running exit with 1.
USAGE_ERROR, STOPPED = 2, 130

FAILURES = {
    "unknown_flag": (["--bogus=1"], USAGE_ERROR, "train.py: error: Unknown command line flag 'bogus'"),
    "optimizer": (["--optimizer=foo"], USAGE_ERROR,
                  "train.py: error: flag --optimizer=foo: value should be one of <adam|sgd>"),
    "batch_size": (["--batch_size=0"], USAGE_ERROR,
                   "train.py: error: flag --batch_size=0: --batch_size must be a positive integer, at most 1048576"),
    "batch_size_huge": (["--batch_size=1000000000000"], USAGE_ERROR,
                        "train.py: error: flag --batch_size=1000000000000: --batch_size must be a positive integer, "
                        "at most 1048576"),
    "epochs_inf": (["--epochs=inf"], USAGE_ERROR,
                   "train.py: error: flag --epochs=inf: --epochs must be > 0 and at most 1e6"),
    "seed_too_big": (["--seed=4294967296"], USAGE_ERROR,
                     "train.py: error: flag --seed=4294967296: --seed must be a non-negative integer, at most "
                     "4294967295"),
    "train_steps_huge": (["--train_steps=100000000000000000000"], USAGE_ERROR,
                         "train.py: error: flag --train_steps=100000000000000000000: --train_steps must be a "
                         "non-negative integer, at most 2147483647"),
    "learning_rate": (["--learning_rate=0"], USAGE_ERROR,
                      "train.py: error: flag --learning_rate=0.0: --learning_rate must be a finite number > 0"),
    "stop_without_target": (["--stop_at_target"], USAGE_ERROR,
                            "train.py: error: flags stop_at_target=True, target_accuracy=0.0: --stop_at_target "
                            "needs a --target_accuracy above 0"),
    "two_budgets": (["--train_steps=5", "--epochs=2"], USAGE_ERROR,
                    "train.py: error: flags train_steps=5, epochs=2.0: give either --train_steps or --epochs, "
                    "not both"),
    "arch_too_big": (["--arch=c8k29v"], USAGE_ERROR,
                     "train.py: error: flags arch=c8k29v, dataset=mnist: --arch architecture token 'c8k29v': "
                     "kernel size 29 does not fit its input of shape (28, 28, 1) (H, W, C) with valid padding"),
    "arch_out_of_memory": (["--arch=d99999999"], USAGE_ERROR,
                           "train.py: error: flags arch=d99999999, dataset=mnist: --arch has 79,499,999,215 "
                           "parameters, which need about 1,185 GiB to train (weights, gradients and two optimizer "
                           "moments in float32); this machine has {memory_gib} GiB"),
    "fit_needs_keras": (["--impl=reference", "--loop=fit"], USAGE_ERROR,
                        "train.py: error: flags impl=reference, loop=fit: --loop=fit trains Keras models only; use "
                        "--impl=keras with --loop=fit, or --loop=custom with --impl=reference"),
    "lookahead_in_fit": (["--loop=fit", "--lookahead_every=5"], USAGE_ERROR,
                         "train.py: error: flags loop=fit, test_time_augmentation=none, bn_bias_lr_scale=1.0, "
                         "lookahead_every=5, whitening_bias_epochs=0.0, max_seconds_per_loop=10.0: "
                         "--test_time_augmentation, --bn_bias_lr_scale, --lookahead_every, --whitening_bias_epochs "
                         "and --max_seconds_per_loop act in the custom loop only; use --loop=custom"),
    "no_whitening_bias_to_freeze": (["--arch=w2g-B8-gmp", "--whitening_bias_epochs=3"], USAGE_ERROR,
                                    "train.py: error: flags arch=w2g-B8-gmp, whitening_bias_epochs=3.0: "
                                    "--whitening_bias_epochs freezes the bias of a whitening layer, which --arch "
                                    "does not have; start it with w{{size}}t (e.g. w2tg)"),
    "logdir_with_newline": (["--logdir={root}/a\nx"], USAGE_ERROR,
                            "train.py: error: flag --logdir={root}/a\\nx: --logdir must not hold control characters "
                            "(a newline, a tab): flags.txt, which reruns the run, holds one flag a line"),
    "data_dir_with_tab": (["--data_dir={root}\t"], USAGE_ERROR,
                          "train.py: error: flags data_dir={root}\\t: --data_dir must not hold control characters "
                          "(a newline, a tab): flags.txt, which reruns the run, holds one flag a line"),
    "data_dir_missing": (["--data_dir=/nonexistent"], USAGE_ERROR,
                         "train.py: error: flag --data_dir=/nonexistent: --data_dir must be an existing directory"),
}


@pytest.fixture(scope="module")
def cli_paths(tmp_path_factory):
    """A folder for the commands' run directories, should validation ever let one through."""
    return dict(root=tmp_path_factory.mktemp("cli_failures"))


# The failure that runs as a real command; the other usage errors are parsed in one process (parse_failures).
# Errors found while running (bad data, a lost worker, ...) print through the same one-line path: the lone worker
# of tests/test_multiworker_faults.py checks it end to end, tests/test_data.py each data message in-process.
AS_COMMANDS = ("unknown_flag",)

_PARSE_EACH = """
import json, sys
from absl import flags
import training.train  # defines the training flags and their validators
from flags import cli
results = {}
for name, args in json.loads(sys.argv[1]).items():
    flags.FLAGS.unparse_flags()
    try:
        flags.FLAGS(["train.py", *args])
        results[name] = None
    except flags.Error as error:
        results[name] = f"train.py: error: {cli.printable(str(error))}"  # as cli.parse_or_exit prints it
print(json.dumps(results))
"""


def _expected(name, cli_paths):
    memory_gib = f"{cli.physical_memory_bytes() / 2**30:,.0f}"
    return FAILURES[name][2].format(**cli_paths, memory_gib=memory_gib)


@pytest.fixture(scope="module")
def parse_failures(cli_paths):
    """Maps each usage error not in AS_COMMANDS to (the message its parse gives, the expected message)."""
    names = [name for name, (_, status, _) in FAILURES.items() if status == USAGE_ERROR and name not in AS_COMMANDS]
    cases = {name: [arg.format(**cli_paths) for arg in FAILURES[name][0]] for name in names}
    completed = subprocess.run([sys.executable, "-c", _PARSE_EACH, json.dumps(cases)], cwd=REPO_ROOT,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, capture_output=True, text=True,
                               timeout=CLI_TIMEOUT_SECONDS)
    assert completed.returncode == 0, completed.stderr
    messages = json.loads(completed.stdout.strip().splitlines()[-1])
    return {name: (messages[name], _expected(name, cli_paths)) for name in names}


@pytest.mark.parametrize("name", [name for name, (_, status, _) in FAILURES.items()
                                  if status == USAGE_ERROR and name not in AS_COMMANDS])
def test_a_bad_flag_value_is_refused_at_parse_time_in_one_line(parse_failures, name):
    message, expected = parse_failures[name]
    assert message == expected


@pytest.mark.parametrize("name", AS_COMMANDS)
def test_bad_input_fails_with_one_line_naming_the_flag(cli_paths, run_cli, name):
    # Should validation ever let the command through, it must not write under the repository's runs/.
    process = run_cli(*FAILURES[name][0], f"--logdir={cli_paths['root'] / name}")
    message = _expected(name, cli_paths)
    assert process.returncode == FAILURES[name][1], process.stderr
    assert "Traceback" not in process.stderr
    assert process.stderr.splitlines()[-1] == message
    assert process.stdout == ""


_STOPPED_BY_SIGTERM = """
import os, signal, time
from flags import cli

def body(arguments):
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)
    finally:
        print("cleanup ran")

cli.run("prog", body, stopped="stopped by a signal; what is kept")
"""


def test_sigterm_stops_an_entry_point_through_its_cleanup_with_one_line():
    # Every entry point runs through cli.run; this one needs no TensorFlow, so the check costs a fraction of a
    # second. (training.train adds where its checkpoints are: tests/test_rundir.py.)
    completed = subprocess.run([sys.executable, "-c", _STOPPED_BY_SIGTERM], cwd=REPO_ROOT, capture_output=True,
                               text=True, timeout=CLI_TIMEOUT_SECONDS)
    assert completed.returncode == STOPPED == 130  # 128 + SIGINT, what a shell reports after Ctrl-C
    assert completed.stdout == "cleanup ran\n"
    assert completed.stderr == "prog: stopped by a signal; what is kept\n"


def test_a_flagfile_that_is_not_text_is_refused_in_one_line(tmp_path):
    binary = tmp_path / "noise.cfg"
    binary.write_bytes(bytes([0x9D, 0xFF, 0x00, 0x41]) * 64)
    process = subprocess.run([sys.executable, "-m", "experiments.analyze", f"--flagfile={binary}"], cwd=REPO_ROOT,
                             capture_output=True, text=True, timeout=CLI_TIMEOUT_SECONDS)
    assert process.returncode == USAGE_ERROR and "Traceback" not in process.stderr
    assert process.stderr.strip().splitlines()[-1] == (
        f"analyze.py: error: --flagfile {binary} is not a text file of flags (byte 0 is not UTF-8)")
