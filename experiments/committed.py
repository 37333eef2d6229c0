"""The tables in ``sweeps/`` made again from their committed run files, and every figure that differs.

A sweep's table (``# Sweep `<grid>` on <dataset>``) is remade by ``report.make_table`` from the runs in
``<runs>/sweeps/<grid>/<dataset>/<label>-seed<k>``, a seeds table (``# <recipe>: <n> of <m> seeds``) by
``seed_runs.make_table`` from ``<runs>/seeds/<recipe>-seed<k>``. The two tables are compared cell by cell, by row
(point or seed) and column name, so a table written by older code, with fewer columns or rows, is compared on what
it has. A sweep's pick on validation is compared too, and every run's step count against the table's step budget
(or its steps column, where each point's budget is its epochs).

The notebook quotes tables in prose: each paragraph or list item that names ``sweeps/<table>.md`` is checked against
the remade tables it names (and the other datasets' tables of the same grid, which such an item compares with):
every ``mean ± std`` in it must be one of theirs, and every percentage with two decimals one of their figures
(a mean, a seed, a bound of a range or an interval).
"""

import dataclasses
import os
import re

from experiments import grids, launch, report, seed_runs
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


PICK = re.compile(r"Picked on validation accuracy [^\n]*?: \*\*(?P<point>[^*]+)\*\*, "
                  r"validation (?P<validation>[^%]+)%, test (?P<test>[^%]+)%")


def _cells(line):
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def parse_table(text):
    """The ``Table`` of a sweep's or seeds command's markdown (the table whose first column is ``point`` or
    ``seed``), or None when it holds none."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if _cells(line)[0] in ("point", "seed")
                  and line.startswith("|")), None)
    if start is None:
        return None
    columns, rows = _cells(lines[start]), {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = _cells(line)
        rows[cells[0]] = dict(zip(columns, cells))
    pick = PICK.search(text)
    return Table(columns, rows, pick.groupdict() if pick else {})


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
    remade.table = parse_table(report.make_table(grid.varied, points, picked))
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


def _seeds_logdir(text, runs_dir):
    """Where a seeds table's runs are: its command's ``--logdir`` when that is a folder of ``sweeps/runs``
    (``sweeps/runs/seeds_10epochs``), read under ``runs_dir``; else ``<runs_dir>/seeds``."""
    match = re.search(r"--logdir=sweeps/runs/([\w./-]+)", _header(text, "command") or "")
    folder = match.group(1).strip("/") if match else "seeds"
    return os.path.join(runs_dir, "seeds" if ".." in folder.split("/") else folder)


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
    remade.table = parse_table(seed_runs.make_table(finished))
    return remade


def compare(path, stated, remade):
    """The cells of ``stated`` that ``remade`` holds otherwise (rows by first cell, columns by name; a column or
    row only one of them has is not compared), and a differing pick. Returns ``(differences, cells compared)``."""
    differences, compared = [], 0
    for row, cells in stated.rows.items():
        if row not in remade.rows:
            continue
        for column in stated.columns[1:]:
            if column in remade.columns:
                compared += 1
                if cells.get(column, "") != remade.rows[row].get(column, ""):
                    differences.append(Difference(path, f"{row}: {column}", cells.get(column, ""),
                                                  _remade(remade.rows[row].get(column, ""))))
    for key in ("point", "validation", "test"):
        if stated.pick and remade.pick:
            compared += 1
            if stated.pick[key] != remade.pick[key]:
                differences.append(Difference(path, f"pick on validation: {key}", stated.pick[key],
                                              _remade(remade.pick[key])))
    return differences, compared


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
    else:
        return TableCheck(path, "other", [], unchecked="not a sweep's or seeds table")
    remade = remake(path, text, runs_dir)
    stated = parse_table(text)
    if remade.table is None:
        return TableCheck(path, kind, remade.differences, unchecked=remade.unchecked, stated=stated)
    differences, compared = compare(path, stated, remade.table)
    return TableCheck(path, kind, remade.differences + differences, compared, remade=remade.table, stated=stated)


MEAN_STD = re.compile(r"(?<![\d.])(\d+\.\d+) ± (\d+\.\d+)")
PERCENT = re.compile(r"(?<![\d.])(\d+\.\d\d)%")
NUMBER = re.compile(r"\d+\.\d+")
MENTION = re.compile(r"sweeps/([\w.-]+\.md)")


def _figures(table):
    """The ``mean ± std`` texts and the decimal numbers of a remade table's cells and pick, and its seeds'."""
    cells = [cell for row in table.rows.values() for cell in row.values()] + list(table.pick.values())
    return ({match.group(0) for cell in cells for match in MEAN_STD.finditer(cell)},
            {number for cell in cells for number in NUMBER.findall(cell)} | table.seed_figures)


# Quotes in a block naming a table that are, by design, of something else: (table file, quote) -> what.
NOT_FROM_THE_TABLE = {
    ("seeds-fashion_mnist_resnet_small.md", "93.59%"): "section 10's single run before the augmentation draws changed",
    ("seeds-cifar10_speed.md", "89.67%"): "seed 0's accuracy at epoch 6, a mid-run evaluation",
    ("seeds-cifar10_speed.md", "94.01%"): "airbench94's own mean over 1,000 runs",
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
        pairs, numbers = set(), set()
        for name in tables:
            more_pairs, more_numbers = _figures(sources[name][0])
            pairs |= more_pairs
            numbers |= more_numbers
        made = ", ".join(name + ("" if sources[name][1] else " (as committed: no run files)") for name in tables)
        quotes = [(match, match.group(0) in pairs, "mean ± std") for match in MEAN_STD.finditer(block)]
        quotes += [(match, match.group(1) in numbers, "figure")
                   for match in PERCENT.finditer(MEAN_STD.sub(lambda m: " " * len(m.group(0)), block))]
        for match, found, kind in quotes:
            checked += 1
            if not found and not any((name, match.group(0)) in NOT_FROM_THE_TABLE for name in named):
                line = first_line + block[:match.start()].count("\n")
                differences.append(Difference(f"{notebook}:{line}", f"a quote of {', '.join(named)}", match.group(0),
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
