"""The tables in ``sweeps/`` made again from their committed run files, and every figure that differs.

A sweep's table (``# Sweep `<grid>` on <dataset>``) is remade by ``report.make_table`` from the runs in
``<runs>/sweeps/<grid>/<dataset>/<label>-seed<k>``, a seeds table (``# <recipe>: <n> of <m> seeds``) by
``seed_runs.make_table`` from ``<runs>/seeds/<recipe>-seed<k>`` (or its command's ``--logdir``), a race's
(``# Race to <target>% test accuracy``) by ``racing.make_table`` from the runs under its command's ``--logdir``
when that is in ``sweeps/runs``. The two tables are compared cell by cell, by row
(point or seed) and column name, so a table written by older code, with fewer columns or rows, is compared on what
it has. A sweep's pick on validation is compared too, its paired differences (``report.paired_differences``: a
sweep table without them is a difference, mended by ``--add_pairs``), and every run's step count against the
table's step budget (or its steps column, where each point's budget is its epochs).

The notebook quotes tables in prose: each paragraph or list item that names ``sweeps/<table>.md`` is checked against
the remade tables it names (and the other datasets' tables of the same grid, which such an item compares with):
every ``mean ± std`` in it must be one of theirs, every percentage with two decimals one of their figures
(a mean, a seed, a bound of a range or an interval), and every difference with its interval (``+0.48 [+0.09,
+0.87]``) one of theirs, either way round.
"""

import dataclasses
import os
import re

from experiments import grids, launch, racing, report, seed_runs
from experiments.points import TABLE_FIELDS, PointResult, RunRecord, run_dir
from training import run_files


@dataclasses.dataclass(frozen=True)
class Difference:
    """A figure as a file states it, and what the run files give instead."""

    where: str  # the file, with a line for the notebook
    what: str  # row and column, or which tables a quote is of
    stated: str
    found: str  # what the run files give, in words

    def text(self):
        return f"{self.where}: {self.what}: stated {self.stated!r}; {self.found}"


def _remade(value):
    return f"the run files give {value!r}"


@dataclasses.dataclass
class Table:
    """A markdown table of points or seeds: its column names, and each row's cells by column keyed by its first
    cell; and a sweep's pick on validation (``point``, ``validation``, ``test``), or {}."""

    columns: list
    rows: dict
    pick: dict = dataclasses.field(default_factory=dict)
    seed_figures: set = dataclasses.field(default_factory=set)  # a sweep's runs' accuracies, "98.17" (percent)
    # A sweep's paired differences (cells by column per pair), or a seeds table's pairs with another recipe (per
    # seed), and the sentence stating the latter's mean difference.
    pairs: dict = dataclasses.field(default_factory=dict)
    notes: list = dataclasses.field(default_factory=list)


PICK = re.compile(r"Picked on validation accuracy [^\n]*?: \*\*(?P<point>[^*]+)\*\*, "
                  r"validation (?P<validation>[^%]+)%, test (?P<test>[^%]+)%")


def _cells(line):
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _rows(lines, first_columns):
    """``(columns, {first cell: cells by column})`` of the first markdown table of ``lines`` whose first column
    is one of ``first_columns``, or None."""
    start = next((i for i, line in enumerate(lines) if line.startswith("|") and _cells(line)[0] in first_columns),
                 None)
    if start is None:
        return None
    columns, rows = _cells(lines[start]), {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = _cells(line)
        rows[cells[0]] = dict(zip(columns, cells))
    return columns, rows


PAIRED_WITH = "## Paired with `"  # the heading of a seeds table's comparison with another recipe (seed_runs)


TABLE_COLUMNS, RACE_COLUMNS = ("point", "seed"), ("recipe",)  # the first column of the table a command writes


def parse_table(text, first_columns=TABLE_COLUMNS):
    """The ``Table`` of a sweep's or seeds command's markdown (the table whose first column is one of
    ``first_columns``: ``RACE_COLUMNS`` for a race's, whose header has no such row), with a sweep's paired
    differences (first column ``pair``) and the sentences of paired comparisons; None when it holds none."""
    lines = text.splitlines()
    found = _rows(lines, first_columns)
    if found is None:
        return None
    pick, pairs = PICK.search(text), _rows(lines, ("pair",))
    paired_with = next((i for i, line in enumerate(lines) if line.startswith(PAIRED_WITH)), None)
    if paired_with is not None:
        pairs = _rows(lines[paired_with:], ("seed",))
    notes = [line for line in lines if line.startswith(seed_runs.PAIRED_SENTENCE) or racing.PAIRED_RATIOS in line]
    return Table(*found, pick.groupdict() if pick else {}, pairs=pairs[1] if pairs else {}, notes=notes)


def _header(text, name):
    """The value of the row ``name`` of a report's header table (``| seeds | 0, 1, 2 |``), or None."""
    match = re.search(rf"^\| {re.escape(name)} \| (.*) \|$", text, re.M)
    return match.group(1) if match else None


@dataclasses.dataclass
class Remade:
    """A committed table made again: the table, or why it could not be (``unchecked``), and the differences found
    while reading its runs (missing ones, other step counts)."""

    table: Table = None
    unchecked: str = ""
    differences: list = dataclasses.field(default_factory=list)
    pairs_section: list = dataclasses.field(default_factory=list)  # a sweep's, as report.paired_differences


def read_point(runs_dir, grid, dataset_name, label, seeds):
    """``(PointResult, [])`` of the runs of ``label`` with ``seeds`` under ``<runs_dir>/sweeps``, or ``(None, the
    seeds without results.json)``. Its overrides are the settings ``grid``'s point sets (the arch alone for a label
    the grid no longer has), as the first run's config.json records them."""
    paths = [run_dir(os.path.join(runs_dir, "sweeps"), grid.name, dataset_name, label, seed) for seed in seeds]
    results = [launch.read_results(run_path, TABLE_FIELDS) for run_path in paths]
    absent = [seed for seed, result in zip(seeds, results) if result is None]
    if absent or not seeds:
        return None, absent
    config = run_files.read_saved(paths[0])["config"]
    overrides = {name: config[name] for name in dict(grid.points).get(label, {"arch": None})}
    return PointResult(label, overrides, [RunRecord(result, reused=True) for result in results]), []


def read_sweep(runs_dir, grid_name, dataset_name):
    """The ``PointResult``s of every point of the grid that has finished runs under ``<runs_dir>/sweeps``, in the
    grid's order, each over the seeds whose run directories hold results.json."""
    grid, points = grids.make_grid(grid_name, dataset_name), []
    folder = os.path.join(runs_dir, "sweeps", grid_name, dataset_name)
    names = os.listdir(folder) if os.path.isdir(folder) else []
    for label, _ in grid.points:
        seeds = sorted(int(match.group(1)) for name in names
                       if (match := re.fullmatch(rf"{re.escape(label)}-seed(\d+)", name))
                       and os.path.exists(os.path.join(folder, name, run_files.RESULTS)))
        point, _ = read_point(runs_dir, grid, dataset_name, label, seeds)
        points += [point] if point else []
    return points


def remake_sweep(path, text, runs_dir):
    """The sweep table ``text`` (from ``path``) made again from the runs under ``<runs_dir>/sweeps``."""
    grid_name, dataset_name = re.search(r"^# Sweep `(\w+)` on (\w+)", text, re.M).groups()
    seeds = [int(seed) for seed in _header(text, "seeds").split(",")]
    # A budget in epochs (no step budget row) has a steps column instead, compared with the others.
    budget = re.search(r"^\| step budget \| ([\d,]+) steps", text, re.M)
    steps = int(budget.group(1).replace(",", "")) if budget else None
    grid = grids.make_grid(grid_name, dataset_name)
    remade, points = Remade(), []
    for label in parse_table(text).rows:
        point, absent = read_point(runs_dir, grid, dataset_name, label, seeds)
        if point is None:
            remade.differences.append(Difference(path, label, "a row", "no run files of seed(s) "
                                                 + ", ".join(map(str, absent))))
            continue
        for seed, run in zip(seeds, point.runs):
            if steps is not None and run.results["train_steps"] != steps:
                remade.differences.append(Difference(path, f"{label} seed {seed}: steps", f"{steps:,}",
                                                     _remade(f"{run.results['train_steps']:,}")))
        points.append(point)
    if not points:
        return Remade(unchecked=f"no run files under {os.path.join(runs_dir, 'sweeps', grid_name, dataset_name)}")
    complete = len(points) == len(parse_table(text).rows)
    picked = report.picked_on_validation(points) if grid.picks_a_point and complete else None
    remade.pairs_section = [] if grid.tuned else report.paired_differences(points)
    remade.table = parse_table("\n".join([report.make_table(grid.varied, points, picked), "",
                                          *remade.pairs_section]))
    if picked is not None:
        remade.table.pick = PICK.search(report.pick_sentence(picked, grid.validation_split)).groupdict()
    remade.table.seed_figures = {f"{100 * run.results[key]:.2f}" for point in points for run in point.runs
                                 for key in ("test_accuracy", "validation_accuracy")
                                 if run.results.get(key) is not None}
    return remade


# Seeds tables whose runs were written outside the repository, where runs of the same recipe name committed
# later are other runs: such a table is not remade from them.
RUNS_ELSEWHERE = {
    "seeds-cifar10_speed.md": "its runs (seeds 0-2, float32 with XLA, commits 54a5e03 and 6bb51b6) were written "
                              "outside the repository; sweeps/runs/seeds/cifar10_speed-seed<k> are later runs",
}


def _command_logdir(text, runs_dir):
    """Where a table's runs are: its command's ``--logdir`` when that is a folder of ``sweeps/runs``
    (``sweeps/runs/seeds_10epochs``), read under ``runs_dir``; None when the command names none there (its runs
    were written outside the repository, or where a seeds command puts them by default)."""
    match = re.search(r"--logdir=sweeps/runs/([\w./-]+)", _header(text, "command") or "")
    if match is None or ".." in match.group(1).split("/"):
        return None
    return os.path.join(runs_dir, match.group(1).strip("/"))


def _seeds_logdir(text, runs_dir):
    """Where a seeds table's runs are: ``_command_logdir``, else ``<runs_dir>/seeds``."""
    return _command_logdir(text, runs_dir) or os.path.join(runs_dir, "seeds")


def remake_seeds(path, text, runs_dir):
    """The seeds table ``text`` (from ``path``) made again from the runs under ``<runs_dir>/seeds``."""
    if os.path.basename(path) in RUNS_ELSEWHERE:
        return Remade(unchecked=RUNS_ELSEWHERE[os.path.basename(path)])
    name, done = re.search(r"^# (\S+): (\d+) of \d+ seeds", text, re.M).groups()
    logdir = _seeds_logdir(text, runs_dir)
    remade, finished = Remade(), []
    for seed in range(int(done)):
        run_path = launch.run_dir(logdir, name, seed)
        results, history = launch.read_run(run_path, seed_runs.TABLE_FIELDS)
        if results is None:
            remade.differences.append(Difference(path, f"seed {seed}", "a row", f"no run files in {run_path}"))
        else:
            finished.append((seed, results, history))
    if not finished:
        return Remade(unchecked=f"no run files under {logdir} ({name}-seed<k>)")
    paired_with = re.search(rf"^{re.escape(PAIRED_WITH)}([^`]+)`", text, re.M)
    section = [] if paired_with is None else seed_runs.paired_section(
        finished, _header(text, "recipe").strip("`"), paired_with.group(1), logdir)
    remade.table = parse_table("\n".join([seed_runs.make_table(finished), "", *section]))
    return remade


def remake_race(path, text, runs_dir):
    """The race table ``text`` (from ``path``) made again from the runs its command wrote under ``sweeps/runs``."""
    logdir = _command_logdir(text, runs_dir)
    if logdir is None:
        return Remade(unchecked="its runs were written outside the repository (its command's --logdir)")
    flagfiles = re.findall(r"`([^`]+)`", _header(text, "recipes") or "")
    seeds = [int(seed) for seed in re.findall(r"\d+", _header(text, "seeds") or "")]  # "0, 1, 2, run alternately"
    target = float(re.search(r"^# Race to ([\d.]+)% test accuracy", text, re.M).group(1)) / 100
    entrants = [racing.Entrant(name, flagfile) for name, flagfile in zip(racing.entrant_names(flagfiles), flagfiles)]
    remade = Remade()
    for entrant in entrants:
        for seed in seeds:
            run_path = launch.run_dir(logdir, entrant.name, seed)
            results = launch.read_results(run_path, racing.TABLE_FIELDS)
            if results is None:
                remade.differences.append(Difference(path, f"{entrant.name} seed {seed}", "a run",
                                                     f"no run files in {run_path}"))
            entrant.runs.append(results)
    if remade.differences:
        return remade
    remade.table = parse_table("\n".join([racing.make_table(entrants, target), "", *racing.paired_ratios(entrants)]),
                               RACE_COLUMNS)
    return remade


def _compare_rows(path, stated_rows, remade_rows, columns):
    """``(differences, cells compared)`` of the rows both hold, on ``columns`` (after the first) both hold."""
    differences, compared = [], 0
    for row, cells in stated_rows.items():
        if row not in remade_rows:
            continue
        for column in columns[1:]:
            if column in remade_rows[row]:
                compared += 1
                if cells.get(column, "") != remade_rows[row][column]:
                    differences.append(Difference(path, f"{row}: {column}", cells.get(column, ""),
                                                  _remade(remade_rows[row][column])))
    return differences, compared


def compare(path, stated, remade):
    """The cells of ``stated`` that ``remade`` holds otherwise (rows by first cell, columns by name; a column or
    row only one of them has is not compared), a differing pick, and paired differences (missing ones too).
    Returns ``(differences, cells compared)``."""
    differences, compared = _compare_rows(path, stated.rows, remade.rows, stated.columns)
    if remade.pairs and not stated.pairs:
        differences.append(Difference(path, "paired differences", "no such section",
                                      f"the run files give {len(remade.pairs)} pairs (--add_pairs writes them)"))
    pair_columns = list(next(iter(stated.pairs.values()), {}))
    more, pairs_compared = _compare_rows(path, stated.pairs, remade.pairs, pair_columns)
    differences, compared = differences + more, compared + pairs_compared
    for stated_note, remade_note in zip(stated.notes, remade.notes):
        compared += 1
        if stated_note != remade_note:
            differences.append(Difference(path, "paired difference", stated_note, _remade(remade_note)))
    for key in ("point", "validation", "test"):
        if stated.pick and remade.pick:
            compared += 1
            if stated.pick[key] != remade.pick[key]:
                differences.append(Difference(path, f"pick on validation: {key}", stated.pick[key],
                                              _remade(remade.pick[key])))
    return differences, compared


PAIRS_NOTE = ("Added from the committed run files after the table was written, by `python3 -m experiments.recheck "
              "--tables --add_pairs`; the sweep command writes this section itself since.")


def add_pairs(path, runs_dir):
    """Writes the paired differences into the sweep table at ``path`` that lacks them, made from its runs under
    ``<runs_dir>/sweeps`` (before its stamp line, if any). Returns whether it wrote."""
    with open(path) as file:
        text = file.read()
    if not text.startswith("# Sweep `") or report.PAIRS_HEADING in text:
        return False
    remade = remake_sweep(path, text, runs_dir)
    if remade.table is None or remade.differences or not remade.pairs_section:
        return False  # no runs to make them from, or runs that no longer give the table: recheck says which
    lines = text.rstrip("\n").split("\n")
    stamp = [lines.pop()] if lines[-1].startswith(report.STAMP_START) else []
    while lines and not lines[-1].strip():
        lines.pop()
    report.write_report(path, "\n".join([*lines, "", *remade.pairs_section, PAIRS_NOTE, "", *stamp]) + "\n")
    return True


@dataclasses.dataclass
class TableCheck:
    path: str  # as the notebook names it: sweeps/<name>.md
    kind: str  # sweep, seeds, or another command's (a race's), not checked here
    differences: list
    compared: int = 0  # cells (and pick fields) compared
    unchecked: str = ""  # why nothing was compared
    remade: Table = None
    stated: Table = None


def check_table(path, text, runs_dir):
    """The ``TableCheck`` of the committed table ``text`` (file ``path``)."""
    if text.startswith("# Sweep `"):
        kind, remake = "sweep", remake_sweep
    elif re.match(r"# \S+: \d+ of \d+ seeds", text):
        kind, remake = "seeds", remake_seeds
    elif text.startswith("# Race to "):
        kind, remake = "race", remake_race
    else:
        return TableCheck(path, "other", [], unchecked="not a sweep's, seeds or race table")
    remade = remake(path, text, runs_dir)
    stated = parse_table(text, RACE_COLUMNS if kind == "race" else TABLE_COLUMNS)
    if remade.table is None:
        return TableCheck(path, kind, remade.differences, unchecked=remade.unchecked, stated=stated)
    differences, compared = compare(path, stated, remade.table)
    return TableCheck(path, kind, remade.differences + differences, compared, remade=remade.table, stated=stated)


MEAN_STD = re.compile(r"(?<![\d.])(\d+\.\d+) ± (\d+\.\d+)")
PERCENT = re.compile(r"(?<![\d.])(\d+\.\d\d)%")
NUMBER = re.compile(r"\d+\.\d+")
MENTION = re.compile(r"sweeps/([\w.-]+\.md)")
# A difference with its interval, "+0.48 [+0.09, +0.87]" (the notebook may write its minus signs as "−").
INTERVAL = re.compile(r"(?<![\d.])([+\-−]\d+\.\d+)\s+\[([+\-−]\d+\.\d+),\s+([+\-−]\d+\.\d+)\]")


def _interval(match):
    """``(mean, low, high)`` of an ``INTERVAL`` match as numbers."""
    return tuple(float(value.replace("−", "-")) for value in match.groups())


def _figures(table):
    """The ``mean ± std`` texts, the decimal numbers and the differences with their intervals (each also the
    other way round: a − b for b − a) of a remade table's cells, pairs and pick, and its seeds' accuracies."""
    cells = [cell for rows in (table.rows, table.pairs) for row in rows.values() for cell in row.values()]
    cells += list(table.pick.values()) + table.notes
    intervals = {_interval(match) for cell in cells for match in INTERVAL.finditer(cell)}
    return ({match.group(0) for cell in cells for match in MEAN_STD.finditer(cell)},
            {number for cell in cells for number in NUMBER.findall(cell)} | table.seed_figures,
            intervals | {(-mean, -high, -low) for mean, low, high in intervals})


# Quotes in a block naming a table that are, by design, of something else: (table file, quote) -> what.
NOT_FROM_THE_TABLE = {
    ("seeds-fashion_mnist_resnet_small.md", "93.59%"): "section 10's single run before the augmentation draws changed",
    ("seeds-cifar10_speed.md", "89.67%"): "seed 0's accuracy at epoch 6, a mid-run evaluation",
    ("seeds-cifar10_speed.md", "94.01%"): "airbench94's own mean over 1,000 runs",
    **{("cnn_vs_mlp-mnist.md", quote): "a difference between two pairs' per-seed gaps (CNN minus MLP at two sizes), "
       "by the command beside it" for quote in ("+2.54 [+0.97, +4.11]", "+1.97 [+0.61, +3.33]",
                                                "+0.57 [-0.23, +1.37]")},
}


def notebook_blocks(text):
    """``(first line number, text)`` of each paragraph, list item, heading and table row of a markdown text."""
    block, start = [], 1
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith(("#", "- ", "|", "```")):
            if block:
                yield start, "\n".join(block)
            block, start = ([line], number) if line.strip() else ([], number + 1)
        else:
            block, start = (block + [line], start) if block else ([line], number)
    if block:
        yield start, "\n".join(block)


def _grid_of(name):
    return name.split("-")[0]


def quoted_differences(notebook, notebook_text, sources):
    """``(differences, quotes checked)``: the figures quoted by blocks of ``notebook_text`` that name a table of
    ``sources`` and that no table they compare with holds, leaving out ``NOT_FROM_THE_TABLE``. ``sources``: table
    file name (``filter_size-mnist.md``) -> ``(Table, whether it was made from run files or is as committed)``."""
    differences, checked = [], 0
    for first_line, block in notebook_blocks(notebook_text):
        named = [name for name in dict.fromkeys(MENTION.findall(block)) if name in sources]
        if not named:
            continue
        grids_named = {_grid_of(name) for name in named if not name.startswith("seeds-")}
        tables = [name for name in sources if name in named or _grid_of(name) in grids_named]
        pairs, numbers, intervals = set(), set(), set()
        for name in tables:
            more_pairs, more_numbers, more_intervals = _figures(sources[name][0])
            pairs |= more_pairs
            numbers |= more_numbers
            intervals |= more_intervals
        made = ", ".join(name + ("" if sources[name][1] else " (as committed: no run files)") for name in tables)
        quotes = [(match, match.group(0) in pairs, "mean ± std") for match in MEAN_STD.finditer(block)]
        quotes += [(match, match.group(1) in numbers, "figure")
                   for match in PERCENT.finditer(MEAN_STD.sub(lambda m: " " * len(m.group(0)), block))]
        quotes += [(match, _interval(match) in intervals, "paired difference") for match in INTERVAL.finditer(block)]
        for match, found, kind in quotes:
            checked += 1
            quote = " ".join(match.group(0).split())  # as one line, were it wrapped
            if not found and not any((name, quote) in NOT_FROM_THE_TABLE for name in named):
                line = first_line + block[:match.start()].count("\n")
                differences.append(Difference(f"{notebook}:{line}", f"a quote of {', '.join(named)}", quote,
                                              f"no {kind} of {made} is that"))
    return differences, checked


def check_all(sweeps_dir, runs_dir, notebook):
    """``(TableCheck per table in sweeps_dir, the notebook's quote differences, quotes checked)``: every committed
    table made again from the run files under ``runs_dir``, and the quotes of those in the markdown file
    ``notebook``."""
    checks = []
    for name in sorted(os.listdir(sweeps_dir)):
        if name.endswith(".md") and not name.endswith(".incomplete.md"):
            with open(os.path.join(sweeps_dir, name)) as file:
                checks.append(check_table(f"sweeps/{name}", file.read(), runs_dir))
    with open(notebook) as file:
        notebook_text = file.read()
    # A table without run files is still a source its quotes must match: its figures as committed.
    sources = {os.path.basename(check.path): (check.remade or check.stated, check.remade is not None)
               for check in checks if check.kind != "other"}
    return checks, *quoted_differences(os.path.basename(notebook), notebook_text, sources)


def format_checks(checks, quotes, quotes_checked):
    """A markdown table of what each committed table's check found, then each difference on a line."""
    lines = ["| table | kind | figures compared | differences | not checked because |",
             "| --- | --- | ---: | ---: | --- |"]
    for check in checks:
        lines.append(f"| {check.path} | {check.kind} | {check.compared} | {len(check.differences)} | "
                     f"{check.unchecked or '—'} |")
    differences = [difference for check in checks for difference in check.differences] + quotes
    lines += ["", f"Quotes of these tables in the notebook: {quotes_checked} checked, {len(quotes)} not among their "
              f"figures; {len(NOT_FROM_THE_TABLE)} left out, known to be of something else:",
              *(f"- {quote} beside {name}: {what}" for (name, quote), what in NOT_FROM_THE_TABLE.items())]
    lines += ["", *(f"- {difference.text()}" for difference in differences)] if differences else []
    return "\n".join(lines)
