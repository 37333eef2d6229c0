"""Learning curves of a seeds command's runs, drawn from their committed results.json alone.

A run records each evaluation in results.json (``evaluations``: step, images trained on, test and validation
accuracy; ``training.progress``). A recipe's curve is, at each step every seed evaluated, the mean over the seeds
with the 95% t-interval of that mean (``stats.summarize``) as a band. Runs of older code recorded no curve; a
recipe is drawn only when every finished seed has one. The plot has two panels: the whole run, and its second half
on a finer accuracy scale, where recipes differ.
"""

import dataclasses
import os
import re

from experiments import launch, stats

SEED_RUN = re.compile(r"^(?P<recipe>.+)-seed(?P<seed>\d+)$")
SPLITS = (("test_accuracy", "test"), ("validation_accuracy", "validation"))


@dataclasses.dataclass(frozen=True)
class Curve:
    """One split's accuracy over a recipe's seeds, in percent, at each step all of them evaluated."""

    split: str
    images: tuple  # images trained on at each evaluation
    means: tuple
    lows: tuple  # the 95% interval of each mean (NaN for one seed)
    highs: tuple


@dataclasses.dataclass(frozen=True)
class RecipeCurves:
    recipe: str
    dataset: str  # results.json's dataset
    seeds: tuple
    batch_size: int
    curves: tuple  # a Curve per split the runs evaluated
    commits: tuple  # the commits the runs' starts name


def recipes_with_curves(seeds_dir):
    """``{recipe: [(seed, results.json, history of starts)]}`` under ``seeds_dir``, seeds in order, of the recipes
    whose finished runs all recorded a curve of at least two evaluations."""
    found = {}
    for name in sorted(os.listdir(seeds_dir)) if os.path.isdir(seeds_dir) else ():
        match, path = SEED_RUN.match(name), os.path.join(seeds_dir, name)
        if match and os.path.isdir(path):
            results, history = launch.read_run(path)
            if results is not None:
                found.setdefault(match["recipe"], []).append((int(match["seed"]), results, history))
    return {recipe: sorted(runs, key=lambda run: run[0]) for recipe, runs in found.items()
            if all(len(results.get("evaluations") or ()) >= 2 for _, results, _ in runs)}


def read_recipe(recipe, runs):
    """The ``RecipeCurves`` of ``runs`` (``[(seed, results.json, history)]``, each finished with a curve)."""
    curves_by_seed = [{record["step"]: record for record in results["evaluations"]} for _, results, _ in runs]
    batch_sizes = {results.get("batch_size") for _, results, _ in runs}
    if len(batch_sizes) != 1 or None in batch_sizes:
        raise launch.StateFileError(f"{recipe}: its seeds record batch sizes {sorted(map(str, batch_sizes))}; their "
                                    "curves are drawn on one axis only at one batch size")
    datasets = {str(results.get("dataset", "dataset not recorded")) for _, results, _ in runs}
    commits = {start["commit"] for _, _, history in runs for start in history if start.get("commit")}
    steps = sorted(set.intersection(*(set(curve) for curve in curves_by_seed)))
    curves = []
    for key, split in SPLITS:
        if any(curve[step].get(key) is None for curve in curves_by_seed for step in steps):
            continue
        summaries = [stats.summarize([100 * curve[step][key] for curve in curves_by_seed]) for step in steps]
        curves.append(Curve(split, tuple(curves_by_seed[0][step]["images"] for step in steps),
                            tuple(s.mean for s in summaries), tuple(s.low for s in summaries),
                            tuple(s.high for s in summaries)))
    return RecipeCurves(recipe, "/".join(sorted(datasets)), tuple(seed for seed, _, _ in runs), batch_sizes.pop(),
                        tuple(curves), tuple(sorted(commits)))


def seeds_text(seeds):
    if seeds == tuple(range(seeds[0], seeds[-1] + 1)) and len(seeds) > 1:
        return f"n={len(seeds)} seeds ({seeds[0]}-{seeds[-1]})"
    return f"n={len(seeds)} seed{'s' if len(seeds) > 1 else ''} ({', '.join(map(str, seeds))})"


def plot_recipe(pyplot, recipe_curves, out_dir, save):
    """``curves_<recipe>.png``: the whole run, and its second half on a finer scale."""
    figure, axes = pyplot.subplots(1, 2, figsize=(12.0, 5.0), squeeze=False)
    axes = axes[0]
    commits = ", ".join(recipe_curves.commits) or "commit not recorded"
    figure.suptitle(f"Learning curves of {recipe_curves.recipe} on {recipe_curves.dataset}: mean of "
                    f"{seeds_text(recipe_curves.seeds)}, batch {recipe_curves.batch_size} (commit {commits})\n"
                    "bands: 95% t-interval of the mean over seeds", fontsize=11)
    last = max(recipe_curves.curves[0].images)
    for axis, start, name in ((axes[0], 0, "whole run"), (axes[1], last / 2, "second half")):
        lowest = 100.0
        for curve in recipe_curves.curves:
            shown = [i for i, images in enumerate(curve.images) if images >= start]
            x = [curve.images[i] / 1000 for i in shown]
            means = [curve.means[i] for i in shown]
            line, = axis.plot(x, means, marker="o", markersize=3, label=curve.split)
            if len(recipe_curves.seeds) > 1:
                axis.fill_between(x, [curve.lows[i] for i in shown], [curve.highs[i] for i in shown],
                                  color=line.get_color(), alpha=0.2, linewidth=0)
                lowest = min([lowest] + [curve.lows[i] for i in shown])
            lowest = min([lowest] + means)
        axis.set_title(name, fontsize=10)
        axis.set_xlabel("images trained on (thousands)")
        axis.set_ylabel("accuracy (%)")
        if start:
            axis.set_ylim(lowest - 0.2, 100 if lowest > 99 else None)
        axis.grid(alpha=0.3)
    return save(pyplot, figure, out_dir, f"curves_{recipe_curves.recipe}.png")


def draw_curves(pyplot, seeds_dir, out_dir, save):
    """A plot per recipe under ``seeds_dir`` whose seeds recorded curves; returns their paths."""
    return [plot_recipe(pyplot, read_recipe(recipe, runs), out_dir, save)
            for recipe, runs in recipes_with_curves(seeds_dir).items()]
