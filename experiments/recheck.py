"""Rerun the cheap figures of WORKSPACE.md: ``python3 -m experiments.recheck [--notrain]``.

Prints a table of each figure as stated and as measured at this commit (``experiments/figures.py``); exit status
1 when one no longer holds. ``--notrain`` checks the counts only (a second), without training the main job.
"""

from absl import flags as absl_flags

from flags import cli

absl_flags.DEFINE_boolean("train", True, "Also train the main job (seed 0, bundled subset) and check its accuracy.")
FLAGS = absl_flags.FLAGS


def main(arguments):
    del arguments
    from experiments import figures as figures_lib

    figures = figures_lib.count_figures()
    if FLAGS.train:
        figures.append(figures_lib.main_job_figure())
    print(figures_lib.format_figures(figures))
    failed = [figure.what for figure in figures if not figure.holds]
    if failed:
        cli.fail("recheck", f"{len(failed)} figure(s) no longer hold: {', '.join(failed)}")


if __name__ == "__main__":
    cli.run('recheck', main)
