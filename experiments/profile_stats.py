"""Where a profiled run's time goes: host self-time per TensorFlow op type, from TensorBoard's profile data.

``op_time_shares(session)`` reads a profile session (``<logdir>/plugins/profile/<session>/``, as
``--profile_steps`` writes it) through the profile plugin's own converter (its "framework_op_stats" tool, the
TensorFlow Stats page) and sums the self-time of each op type; ``step_breakdown`` reads the profiled steps' times,
by part, from its overview page. ``python3 -m experiments.op_time --logdir=RUN`` prints both, so a profile can be
read without a browser (TensorBoard's Profile tab needs the internet: README, Profiling). Idle time (TensorFlow's
pool threads waiting; there are more threads than cores) is kept apart from the busy time the shares are of.
"""

import collections
import json
import pathlib
import shutil
import tempfile

from training.errors import OneLineError, first_line

IDLE = "IDLE"


class ProfileError(OneLineError, ValueError):
    """A profile session that cannot be read (a trace cut short by a kill, an empty file); the message names the
    session folder."""


def profile_sessions(logdir):
    """The profile sessions of a run directory, oldest first."""
    root = pathlib.Path(logdir, "plugins", "profile")
    return sorted(path for path in root.iterdir() if path.is_dir()) if root.is_dir() else []


def _tool_data(session, tool):
    """The profile plugin's JSON for ``tool`` on ``session``, converted as TensorBoard converts it. Raises
    ``ProfileError`` when the session holds no XSpace or one that is not whole."""
    from tensorboard_plugin_profile import convert

    # The converter leaves a cache file beside the XSpace; a copy keeps the run directory as it was.
    with tempfile.TemporaryDirectory() as workdir:
        try:
            copy = shutil.copytree(session, pathlib.Path(workdir, pathlib.Path(session).name))
        except OSError as error:
            raise ProfileError(f"{session}: cannot be read ({first_line(error)})") from None
        xspaces = sorted(copy.glob("*.xplane.pb"))
        _check_xspaces(session, xspaces)
        unreadable = f"{session}: no readable profile (the profile converter cannot read its " + ", ".join(
            path.name for path in xspaces)
        try:
            data, _ = convert.raw_to_tool_data.xspace_to_tool_data([str(path) for path in xspaces], tool,
                                                                   {"use_saved_result": False})
            data = json.loads(data) if data else None
        except Exception as error:  # noqa: BLE001  the converter's C++ may raise anything on a damaged file
            raise ProfileError(f"{unreadable}: {first_line(error)})") from None
    if data is None:
        raise ProfileError(f"{unreadable})")
    return data


def _check_xspaces(session, paths):
    """Raises ``ProfileError`` unless ``paths`` are XSpaces with something in them. Checked here because the
    converter logs a damaged one in a line of its own that names the temporary copy, and converts an empty one
    (0 bytes, or bytes that happen to parse) to empty tables."""
    from google.protobuf.message import DecodeError

    try:
        from tsl.profiler.protobuf import xplane_pb2
    except ImportError:
        from tensorflow.tsl.profiler.protobuf import xplane_pb2

    if not paths:
        raise ProfileError(f"{session}: no readable profile (it holds no <host>.xplane.pb)")
    for path in paths:
        try:
            planes = xplane_pb2.XSpace.FromString(path.read_bytes()).planes
        except DecodeError:
            raise ProfileError(f"{session}: no readable profile (its {path.name} is damaged)") from None
        if not planes:
            raise ProfileError(f"{session}: no readable profile (its {path.name} is empty)")


def step_seconds(session):
    """``{step name: seconds}`` of the profiled steps, from the overview page's step-time graph."""
    return {name: total / 1000 for name, _, total in step_breakdown(session)[1]}


def step_breakdown(session):
    """The overview page's step-time breakdown: ``(categories, steps, summary)``. ``categories`` are the labels
    of the parts of a step (host compute, input, compilation, ...) that took time in some profiled step;
    ``steps`` is ``[(step name, [ms of each category], step ms)]``; ``summary`` has the page's ``hardware``,
    the step time's ``average``, ``minimum``, ``maximum`` and ``deviation`` (ms), and its ``conclusion``."""
    graph = _tool_data(session, "overview_page")[1]
    columns = [column for column in graph["cols"] if column["type"] == "number"]
    labels = [column["label"] for column in columns][:-1]  # the last is the step time
    rows = [[cell.get("v") if cell else None for cell in row["c"]] for row in graph["rows"]]
    indices = [graph["cols"].index(column) for column in columns]
    steps = [(row[0], [row[i] or 0.0 for i in indices[:-1]], row[indices[-1]]) for row in rows]
    used = [k for k in range(len(labels)) if any(parts[k] for _, parts, _ in steps)]
    page = graph["p"]
    summary = dict(hardware=page.get("hardware_type", ""), conclusion=page.get("input_conclusion", ""),
                   **{key: float(page.get(f"steptime_ms_{name}", 0) or 0) for key, name in (
                       ("average", "average"), ("minimum", "minimum"), ("maximum", "maximum"),
                       ("deviation", "standard_deviation"))})
    return ([labels[k] for k in used], [(name, [parts[k] for k in used], total) for name, parts, total in steps],
            summary)


def format_breakdown(categories, steps, summary):
    """The overview page as text: a markdown table of each profiled step's time by part (ms), the mean row, and
    the page's conclusion."""
    lines = [f"Step time ({summary['hardware']}): {summary['average']:.1f} ms on average over {len(steps)} "
             f"profiled steps ({summary['minimum']:.1f}-{summary['maximum']:.1f} ms, sd {summary['deviation']:.1f})",
             "", "| step | step time ms | " + " | ".join(f"{label} ms" for label in categories) + " |",
             "| --- | ---: | " + " | ".join("---:" for _ in categories) + " |"]
    lines += [f"| {name} | {total:.2f} | " + " | ".join(f"{part:.2f}" for part in parts) + " |"
              for name, parts, total in steps]
    if steps:
        means = [sum(parts[k] for _, parts, _ in steps) / len(steps) for k in range(len(categories))]
        lines.append(f"| mean | {sum(total for _, _, total in steps) / len(steps):.2f} | "
                     + " | ".join(f"{mean:.2f}" for mean in means) + " |")
    if summary["conclusion"]:
        lines += ["", summary["conclusion"]]
    return "\n".join(lines)


def op_time_shares(session):
    """``(idle seconds, [(op type, busy seconds, share of the busy time)], most first)`` of a profile session,
    summed over every host thread."""
    table = _tool_data(session, "framework_op_stats")
    table = table[0] if isinstance(table, list) else table
    columns = {column["label"]: i for i, column in enumerate(table["cols"])}
    seconds = collections.Counter()
    for row in table["rows"]:
        cells = [cell.get("v") if cell else None for cell in row["c"]]
        seconds[cells[columns["Operation Type"]]] += cells[columns["Total self-time (us)"]] / 1e6
    idle = seconds.pop(IDLE, 0.0)
    busy = sum(seconds.values())
    return idle, [(kind, value, value / busy) for kind, value in seconds.most_common()]


def format_shares(idle, shares, steps, cores, top=12):
    """A markdown table of the ``top`` op types by busy time, the rest summed, then the idle time; and a line
    comparing the busy time with the profiled steps' wall time x ``cores``."""
    busy = sum(value for _, value, _ in shares)
    wall = sum(steps.values())
    lines = ["| op type | self-time s | share of busy time |", "| --- | ---: | ---: |"]
    lines += [f"| {kind} | {value:.2f} | {100 * share:.1f}% |" for kind, value, share in shares[:top]]
    rest = sum(value for _, value, _ in shares[top:])
    if rest:
        lines.append(f"| {len(shares) - top} other op types | {rest:.2f} | {100 * rest / busy:.1f}% |")
    lines.append(f"| (busy, all threads) | {busy:.2f} | 100% |")
    lines.append(f"| (idle, all threads) | {idle:.2f} | |")
    if wall:
        lines += ["", f"{len(steps)} profiled steps took {wall:.2f} s; busy time {busy:.2f} s is "
                  f"{100 * busy / (wall * cores):.0f}% of {cores} cores x that time (the profile covers the steps "
                  "only, as `--profile_steps` records them)."]
    return "\n".join(lines)
