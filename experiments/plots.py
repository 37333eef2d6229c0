"""Draw the sweeps' plots from their committed run files: ``python3 -m experiments.plots --out=docs/images``.

Writes sweep_filter_size.png, sweep_downsampling.png, sweep_cnn_vs_mlp_params.png, sweep_cnn_vs_mlp_macs.png and
sweep_optimizer.png (``experiments/plotting.py``), and curves_<recipe>.png for each seeds recipe whose runs
recorded their evaluations (``experiments/curves.py``); nothing is trained. Needs matplotlib (requirements-dev.txt).
"""

import os
import sys

if __name__ == "__main__":
    from flags import console

    console.quiet(sys.argv)

from absl import flags as absl_flags  # noqa: E402

from flags import cli  # noqa: E402
from training.provenance import REPO_DIR  # noqa: E402

absl_flags.DEFINE_string("out", "docs/images", "Folder to write the PNGs into (made when missing).")
absl_flags.DEFINE_string("runs_dir", os.path.join(REPO_DIR, "sweeps", "runs"),
                         "Folder holding sweeps/<grid>/<dataset>/<label>-seed<k> and seeds/<recipe>-seed<k> run "
                         "directories.")
cli.check_directory("runs_dir", required=True)
cli.check("out", lambda v: not os.path.exists(v) or os.path.isdir(v), "must name a folder, not a file")
FLAGS = absl_flags.FLAGS


def main(arguments):
    del arguments
    from experiments import plotting

    for path in plotting.draw_all(FLAGS.runs_dir, FLAGS.out):
        print(path)


if __name__ == "__main__":
    cli.run("plots", main)
