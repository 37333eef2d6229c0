"""What every entry point shares: parsing flags with a one-line error instead of a usage dump."""

import os
import signal
import sys

from absl import app, logging
from absl import flags as absl_flags

from flags import console
from training import flagfiles
from training.errors import OneLineError


def parse_or_exit(argv):
    """absl's flag parser for ``app.run``; a bad flag prints ``<program>: error: <why>`` and exits with 2."""
    try:
        return absl_flags.FLAGS(argv)
    except absl_flags.Error as error:
        print(f"{os.path.basename(argv[0])}: error: {printable(str(error))}", file=sys.stderr)
        sys.exit(2)
    except UnicodeDecodeError as error:  # absl reads a --flagfile as UTF-8 text
        flagfiles = [arg.split("=", 1)[1] for arg in argv if arg.startswith("--flagfile=")]
        print(f"{os.path.basename(argv[0])}: error: --flagfile {', '.join(flagfiles) or ''} is not a text file "
              f"of flags (byte {error.start} is not UTF-8)", file=sys.stderr)
        sys.exit(2)


def printable(text):
    """``text`` with each control character as Python writes it in a string (``\\n``): a value that holds a
    newline keeps its error on one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


# Exit status of a command stopped by SIGINT or SIGTERM: 128 + SIGINT's number, as a shell reports Ctrl-C.
STOPPED = 130


def run(program, body, positional=False, stopped="stopped by a signal"):
    """Runs ``body(arguments)`` as the main function of ``program``: absl parses the flags (a bad flag is one
    line and exit 2), arguments besides flags are refused unless ``positional``, and a ``OneLineError`` is one
    line and exit 1. SIGTERM stops the body as Ctrl-C does, through its own cleanup (a run's lock, a directory
    that a start made and never checkpointed into); either then prints one line, ``<program>: <what the
    KeyboardInterrupt says, else stopped>``, and exits with ``STOPPED`` (130).

    Every entry point starts here, so here the console is quieted, before any body imports TensorFlow (entry
    points import only TensorFlow-free flag modules at the top: tests/test_layout.py). A flagfile that cannot
    be read as flags (a named pipe would block every reader) is refused first, in one line with exit 2."""
    unreadable = flagfiles.problem(sys.argv[1:])
    if unreadable:
        fail(program, printable(unreadable), status=2)
    console.quiet(sys.argv)

    def main(argv):
        if len(argv) > 1 and not positional:
            fail(program, f"unexpected arguments {' '.join(argv[1:])}; flags look like --name=value", status=2)
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            body(argv[1:])
        except OneLineError as error:
            logging.flush()
            fail(program, error)
        except KeyboardInterrupt as stop:
            logging.flush()
            print(f"{program}: {stop.args[0] if stop.args else stopped}", file=sys.stderr)
            sys.exit(STOPPED)

    app.run(main, flags_parser=parse_or_exit)


def _interrupt(signum, frame):
    del signum, frame
    raise KeyboardInterrupt


def fail(program, message, status=1):
    """Prints ``<program>: error: <message>`` on stderr and exits with ``status``."""
    print(f"{program}: error: {message}", file=sys.stderr)
    sys.exit(status)


def check(name, predicate, message):
    """Registers a parse-time check of flag ``name``; a failure reads ``--<name> <message>``."""
    absl_flags.register_validator(name, predicate, message=f"--{name} {message}")


def check_directory(name, required=False):
    """Registers a parse-time check that flag ``name``, when given, names an existing directory. An optional flag
    may be empty; a ``required`` one may not (its absence is ``mark_flag_as_required``'s to report)."""
    unset = (lambda v: v is None) if required else (lambda v: not v)
    check(name, lambda v: unset(v) or os.path.isdir(v), "must be an existing directory")


def define_data_dir(meaning):
    """``--data_dir``, the folder of ``<dataset>.npz`` files (of a run on a folder of images, that folder; on a
    TFDS dataset, TFDS's data_dir), with what this command does with it (``meaning``, a sentence); a folder given
    must exist."""
    absl_flags.DEFINE_string("data_dir", "", f"Folder holding <dataset>.npz (x_train, y_train, x_test, y_test); "
                             f"for a run of --dataset=folder its folder of class folders, of --dataset=tfds TFDS's "
                             f"data_dir. {meaning}")
    check_directory("data_dir")
    # Passed on to training.train, whose flags.txt holds one flag a line, and written into the tables' commands.
    check("data_dir", lambda v: not v or v.isprintable(), "must not hold control characters (a newline, a tab)")


def define_table_flags(default, refused, unit):
    """``--out`` (the markdown table a command writes; ``default`` where it goes otherwise, ``refused`` which
    tables there it will not replace) and ``--overwrite_table``, for tables of finished ``unit`` (runs, seeds)."""
    absl_flags.DEFINE_string("out", "", f"Markdown file to write; default {default}. A table there {refused}, or "
                             "written by hand, is refused.")
    absl_flags.DEFINE_bool("overwrite_table", False, "Replace --out whatever table it holds, and at once, even by a "
                           f"table of fewer finished {unit} (otherwise that one goes to <out>.incomplete.md until it "
                           "has caught up).")
    check("out", lambda v: not v.endswith(os.sep) and not os.path.isdir(v), "must name a file, not a directory")
    # Checked here, before the runs, as well as where the table is written (run_files.write_atomically).
    check("out", lambda v: not os.path.islink(v), "is a symbolic link; a table is never written through one: "
          "remove the link, or pass another --out")


# Bytes a float32 weight costs while training: the weight, its gradient and two Adam moments.
TRAINING_BYTES_PER_PARAM = 16


def register_arch_validator(arch_flag="arch", dataset_flag="dataset", flag_values=absl_flags.FLAGS, describe=None):
    """Refuses, at parse time, an architecture that is malformed or does not fit the dataset's images (the
    message names the token and the shapes, from ``models.architecture.plan``), or whose weights alone could not
    be trained in this machine's memory. ``describe(values)`` is the dataset's ``DatasetInfo`` where the dataset
    flag alone does not say it (a folder of images: the training flags); default: ``dataset_info.describe``."""
    from models import analysis, architecture
    from training import dataset_info

    describe = describe or (lambda values: dataset_info.describe(values[dataset_flag]))

    @absl_flags.multi_flags_validator([arch_flag, dataset_flag], message="", flag_values=flag_values)
    def _arch_fits(values):
        if not values[arch_flag]:
            raise absl_flags.ValidationError(f"--{arch_flag} {architecture.EMPTY_ARCH}")
        try:
            info = describe(values)
        except ValueError:
            return True  # a folder that is no dataset, or a flag of its that does not parse: their own checks say why
        try:
            rows = analysis.layer_table(values[arch_flag], info.image_shape, info.num_classes)
        except ValueError as error:
            raise absl_flags.ValidationError(f"--{arch_flag} {error}") from None
        params = analysis.totals(rows)[0]
        needed, memory = params * TRAINING_BYTES_PER_PARAM, physical_memory_bytes()
        if memory and needed > memory:
            raise absl_flags.ValidationError(
                f"--{arch_flag} has {params:,} parameters, which need about {needed / 2**30:,.0f} GiB to train "
                f"(weights, gradients and two optimizer moments in float32); this machine has "
                f"{memory / 2**30:,.0f} GiB")
        return True


def physical_memory_bytes():
    """The machine's RAM in bytes, or 0 where the operating system does not say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0
