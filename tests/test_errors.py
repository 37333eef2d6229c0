"""``errors.first_line``: what a one-line error quotes of another library's message (TensorFlow's, NumPy's)."""

import tokenize

import pytest
import tensorflow as tf

from training.errors import QUOTED_LINE_LIMIT, first_line

# What TensorFlow 2.21 raised here: an eager op (predicting a zero-size image), and an error inside a tf.function.
EAGER = ("{{function_node __wrapped__ScaleAndTranslate_device_/job:localhost/replica:0/task:0/device:CPU:0}} input "
         "image must be of non-zero size [Op:ScaleAndTranslate] name: ")
GRAPH = ("Graph execution error:\n\nDetected at node Relu defined at (most recent call last):\n  File \"a.py\", line "
         "3, in <module>\n\n  File \"a.py\", line 9, in f\n\noutput depth must be evenly divisible by number of "
         "groups: 4 vs 3\n\t [[{{node Relu}}]]")


@pytest.mark.parametrize("error, quoted", [
    (tf.errors.InvalidArgumentError(None, None, EAGER), "input image must be of non-zero size"),
    (tf.errors.InvalidArgumentError(None, None, GRAPH), "output depth must be evenly divisible by number of groups: "
                                                        "4 vs 3"),
    (tokenize.TokenError("EOF in multi-line string", (1, 0)), "EOF in multi-line string"),  # not its position
    (ValueError("Cannot parse header: \"{'descr':\n  '<f8'}\""), "Cannot parse header: \"{'descr':"),
    (ValueError("File format not supported: x.keras"), "File format not supported: x.keras"),  # no traceback line
    (OSError(2, "No such file or directory"), "[Errno 2] No such file or directory"),
    (KeyError(), "KeyError"),
    (ValueError("a" * 500), "a" * QUOTED_LINE_LIMIT),
], ids=["tf_eager", "tf_graph", "token_error", "numpy_header", "plain_file_word", "os_error", "empty", "long"])
def test_first_line_quotes_what_happened_in_one_line(error, quoted):
    assert first_line(error) == quoted
