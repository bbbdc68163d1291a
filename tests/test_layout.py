"""The package reads as the pipeline: no import cycles between its modules, late imports included."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sound_cluster"


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Each module's imports of other modules of the package, at any depth of the file (late imports too)."""
    modules = {_module(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            deps |= {t for t in targets if t in modules and t != name}
        # A package's __init__ re-exporting its own modules is not a dependency of theirs on it.
        graph[name] = {d for d in deps if not (path.name == "__init__.py" and d.startswith(name + "."))}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for d in sorted(graph[n]):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state and (found := visit(d)):
                return found
        state[n] = 2
        stack.pop()
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_no_import_cycles():
    graph = _imports()
    assert len(graph) > 30
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_cycle_finder_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


@pytest.mark.parametrize("stage, later", [("ingest", ("embed", "segment", "outputs", "run")),
                                          ("embed", ("segment", "outputs", "run")),
                                          ("segment", ("outputs", "run"))])
def test_stages_do_not_import_later_stages(stage, later):
    graph = _imports()
    for name, deps in graph.items():
        if name.startswith(f"sound_cluster.{stage}."):
            bad = sorted(d for d in deps if d.split(".")[1] in later)
            assert not bad, f"{name} imports {bad}"


def _path_parts(path: Path) -> list[tuple[int, str]]:
    """String constants of a module that name files (with an extension) or are joined onto a path (``p / "x"``)."""
    out = []
    for n in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and "." in n.value:
            out.append((n.lineno, n.value))
        elif isinstance(n, ast.BinOp) and isinstance(n.op, ast.Div) and isinstance(n.right, ast.Constant) \
                and isinstance(n.right.value, str):
            out.append((n.lineno, n.right.value))
    return out


def test_run_folder_file_names_are_stated_only_in_run_folder():
    """The run folder's layout has one owner (sound_cluster.run_folder.RunFolder): no other module spells its paths."""
    from sound_cluster import run_folder
    from sound_cluster.run_folder import ModelsFolder

    names = set(run_folder.OUTPUTS) | {getattr(ModelsFolder, a) for a in dir(ModelsFolder)
                                       if a.isupper() and isinstance(getattr(ModelsFolder, a), str)}
    assert {"summary.json", "clusters.csv", "posteriors", "merge_model.keras", "units.npz"} <= names
    for path in PACKAGE.rglob("*.py"):
        if path.name == "run_folder.py":
            continue
        hits = [(line, v) for line, v in _path_parts(path) if v in names]
        assert not hits, f"{path.relative_to(PACKAGE.parent)} spells run-folder paths: {hits}"


def test_run_modules_use_each_other_only_through_public_names():
    """run/ is a short list of stages: no run/ module reaches into another's private (underscored) names."""
    for path in (PACKAGE / "run").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sound_cluster.run."):
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{path.name} imports {private} from {node.module}"


def test_the_task_is_decided_in_one_place():
    """``params.task`` is compared only where the settings define it (config) and where the pipeline dispatches."""
    allowed = {PACKAGE / "config" / "params.py", PACKAGE / "run" / "pipeline.py"}
    for path in PACKAGE.rglob("*.py"):
        if path in allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Compare):
                sides = [node.left, *node.comparators]
                assert not any(isinstance(x, ast.Attribute) and x.attr == "task" for x in sides), \
                    f"{path.relative_to(PACKAGE.parent)}:{node.lineno} decides on the task"
