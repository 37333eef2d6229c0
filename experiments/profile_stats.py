"""Where a profiled run's time goes: host self-time per TensorFlow op type, from TensorBoard's profile data.

``op_time_shares(session)`` reads a profile session (``<logdir>/plugins/profile/<session>/``, as
``--profile_steps`` writes it) through the profile plugin's own converter (its "framework_op_stats" tool, the
TensorFlow Stats page) and sums the self-time of each op type; ``step_seconds`` reads the profiled steps' times
from its overview page. ``python3 -m experiments.op_time --logdir=RUN`` prints both. Idle time (TensorFlow's
pool threads waiting; there are more threads than cores) is kept apart from the busy time the shares are of.
"""

import collections
import json
import pathlib
import shutil
import tempfile

IDLE = "IDLE"


def profile_sessions(logdir):
    """The profile sessions of a run directory, oldest first."""
    root = pathlib.Path(logdir, "plugins", "profile")
    return sorted(path for path in root.iterdir() if path.is_dir()) if root.is_dir() else []


def _tool_data(session, tool):
    """The profile plugin's JSON for ``tool`` on ``session``, converted as TensorBoard converts it."""
    from tensorboard_plugin_profile import convert

    # The converter leaves a cache file beside the XSpace; a copy keeps the run directory as it was.
    with tempfile.TemporaryDirectory() as workdir:
        copy = shutil.copytree(session, pathlib.Path(workdir, pathlib.Path(session).name))
        data, _ = convert.raw_to_tool_data.xspace_to_tool_data([str(path) for path in copy.glob("*.xplane.pb")],
                                                               tool, {"use_saved_result": False})
    return json.loads(data)


def step_seconds(session):
    """``{step name: seconds}`` of the profiled steps, from the overview page's step-time graph."""
    graph = _tool_data(session, "overview_page")[1]
    return {row["c"][0]["v"]: row["c"][-1]["v"] / 1000 for row in graph["rows"]}


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
