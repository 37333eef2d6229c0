"""The code's shape: no import circle among the project's modules, entry points apart from the library, flags
parsed before TensorFlow is imported."""

import ast
import pathlib
import subprocess
import sys

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("models", "reference", "training", "experiments", "flags")


def module_name(path):
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_imports(path, modules):
    """Every project module ``path`` imports, at the top or inside a function (a lazy import counts too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {name for name in names if name in modules}
    return found


def import_graph():
    paths = [path for package in PACKAGES for path in (REPO_ROOT / package).rglob("*.py")]
    modules = {module_name(path): path for path in paths}
    # A package's __init__ re-exporting its modules is how Python packages work, not a circle: leave it out.
    return {name: project_imports(path, modules) - {name} for name, path in modules.items()
            if path.name != "__init__.py"}, modules


def test_no_module_imports_a_module_that_imports_it_back():
    graph, _ = import_graph()
    graph = {name: {dep for dep in deps if dep in graph} for name, deps in graph.items()}
    state, cycles = {}, []

    def visit(name, stack):
        state[name] = "open"
        for dep in sorted(graph[name]):
            if state.get(dep) == "open":
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import circles: " + "; ".join(" -> ".join(cycle) for cycle in cycles)


def test_the_run_machinery_never_imports_experiment_tooling_or_entry_points():
    graph, modules = import_graph()
    entry_points = {name for name, path in modules.items() if 'if __name__ == "__main__":' in path.read_text()}
    assert {"training.train", "experiments.sweep", "experiments.race"} <= entry_points
    for name, deps in graph.items():
        if name.startswith(("models", "reference", "training")) and name not in entry_points:
            assert not {dep for dep in deps if dep.startswith(("experiments", "flags"))}, name
        assert not deps & entry_points, f"{name} imports an entry point"
    assert graph["training.trainer"] >= {"training.custom_loop", "training.fit_loop"}
    assert "training.trainer" not in graph["training.fit_loop"] | graph["training.custom_loop"]


# The floors, lowest first: the networks (the reference and the Keras models build on one architecture
# language), the run machinery that trains them, the experiment tooling that uses runs, and the command-line
# flags of every command. Entry points stand above them all.
FLOORS = {"models": 0, "reference": 0, "training": 1, "experiments": 2, "flags": 3}


def test_no_package_imports_one_on_a_floor_above_it():
    graph, modules = import_graph()
    entry_points = {name for name, path in modules.items() if 'if __name__ == "__main__":' in path.read_text()}
    floor = lambda module: FLOORS[module.split(".")[0]]  # noqa: E731
    upward = sorted(f"{name} -> {dep}" for name, deps in graph.items() if name not in entry_points
                    for dep in deps if dep not in entry_points and floor(dep) > floor(name))
    assert upward == []


TENSORFLOW_FREE_FLAGS = tuple(sorted(f"flags.{path.stem}" for path in (REPO_ROOT / "flags").glob("*_flags.py")))


def heavy_modules_imported_by(modules):
    """Which of TensorFlow and Keras a fresh process has imported after importing ``modules`` (argv set)."""
    code = (f"import sys; sys.argv = ['prog']; import {', '.join(modules)}; "
            "print(sorted(name for name in ('tensorflow', 'keras') if name in sys.modules))")
    completed = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True,
                               timeout=60)
    assert completed.returncode == 0, completed.stderr
    return completed.stdout.strip()


@pytest.mark.parametrize("modules", [("training.train",), TENSORFLOW_FREE_FLAGS], ids=["train", "flag_modules"])
def test_flags_are_defined_without_importing_tensorflow(modules):
    # So a refused flag or --help answers in a fraction of a second instead of after TensorFlow's start-up
    # (seconds); an entry point imports TensorFlow in main(), once its flags have parsed.
    assert heavy_modules_imported_by(modules) == "[]"


def test_commands_that_only_start_runs_never_import_tensorflow():
    # experiments.seeds and experiments.race wait for hours on training processes: without TensorFlow they start
    # seconds sooner and hold 28,716 kB instead of 632,612 kB meanwhile (peak RSS, WORKSPACE.md section 14).
    assert heavy_modules_imported_by(("experiments.seed_runs", "experiments.racing")) == "[]"


def test_every_loop_a_run_can_name_is_implemented():
    from training import choices, trainer

    assert tuple(trainer.LOOPS) == choices.LOOPS
