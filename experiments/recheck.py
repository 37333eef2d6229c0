"""Rerun the cheap figures of WORKSPACE.md: ``python3 -m experiments.recheck [--notrain | --tables [--add_pairs]]``.

Prints a table of each figure as stated and as measured at this commit (``experiments/figures.py``); exit status
1 when one no longer holds. ``--notrain`` checks the counts only (a second), without training the main job.
``--tables`` instead makes every sweep, seeds and race table in ``sweeps/`` again from its committed run files
(``experiments/committed.py``), and lists each figure of a table, or quoted from one in WORKSPACE.md, that
differs; exit status 1 when one does. ``--add_pairs`` first writes the paired differences into each sweep table
that lacks them, made from its committed run files (tables written before the sweep command wrote them).
"""

from absl import flags as absl_flags

from flags import cli

absl_flags.DEFINE_boolean("train", True, "Also train the main job (seed 0, bundled subset) and check its accuracy.")
absl_flags.DEFINE_boolean("tables", False, "Instead of the counts and the main job: make the tables in sweeps/ again "
                          "from their committed run files and compare them, and WORKSPACE.md's quotes of them.")
absl_flags.DEFINE_boolean("add_pairs", False, "With --tables: first write the paired differences into each sweep "
                          "table in sweeps/ that lacks them, from its committed run files.")
FLAGS = absl_flags.FLAGS


def check_tables(add_pairs=False):
    import os

    from experiments import committed
    from training.provenance import REPO_DIR

    sweeps = os.path.join(REPO_DIR, "sweeps")
    if add_pairs:
        for name in sorted(os.listdir(sweeps)):
            path = os.path.join(sweeps, name)
            if name.endswith(".md") and not name.endswith(".incomplete.md") and committed.add_pairs(
                    path, os.path.join(sweeps, "runs")):
                print(f"sweeps/{name}: paired differences added")
    checks, quotes, quotes_checked = committed.check_all(sweeps, os.path.join(sweeps, "runs"),
                                                         os.path.join(REPO_DIR, "WORKSPACE.md"))
    print(committed.format_checks(checks, quotes, quotes_checked))
    differing = sum(len(check.differences) for check in checks) + len(quotes)
    if differing:
        cli.fail("recheck", f"{differing} figure(s) differ from what the committed run files give (listed above)")


def main(arguments):
    del arguments
    if FLAGS.add_pairs and not FLAGS.tables:
        cli.fail("recheck", "--add_pairs writes into the tables --tables checks: pass --tables too")
    if FLAGS.tables:
        return check_tables(FLAGS.add_pairs)
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
