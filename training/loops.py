"""The loops a run can be trained by: ``--loop`` name -> ``train(run) -> figures``."""

from training import custom_loop, fit_loop

LOOPS = {"custom": custom_loop.train, "fit": fit_loop.train}
