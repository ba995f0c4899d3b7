"""The shape of the package (issue #16): a light core, imports one way (apps -> engine -> core)
without cycles, and no function longer than a screen. The import graph and the function lengths
are read from the source with ``ast``, so nothing here imports the modules it judges."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "instyle"

# Libraries that importing the core must not load: the core is instance norm on torch alone.
HEAVY = ("PIL", "matplotlib", "skimage", "h5py", "safetensors", "gradio", "onnx", "onnxruntime")
LAYERS = ("core", "engine", "apps")  # each layer may import only the layers before it
MAX_FUNCTION_LINES = 80


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> str | None:
    if module in ("instyle", "instyle.nn", "instyle.functional") or module.split(".")[:2] == ["instyle", "ops"]:
        return "core"
    if module.split(".")[:2] == ["instyle", "engine"]:
        return "engine"
    if module.split(".")[:2] == ["instyle", "apps"] or module == "instyle.__main__":
        return "apps"
    return None


def _known(name: str, modules: dict[str, Path]) -> str:
    """``name`` itself if it is a module of the package, else its nearest enclosing one."""
    while name not in modules and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that ``module`` imports anywhere in its source (functions included).
    ``from pkg import name`` counts as importing ``pkg.name`` when that is a module, else ``pkg``."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            targets = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source for alias in node.names]
        else:
            continue
        found.update(_known(t, modules) for t in targets if t == "instyle" or t.startswith("instyle."))
    found.discard(module)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {module: imports_of(module, path, modules) for module, path in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a -> b -> ... -> a) per strongly connected component that has one (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_cycle_in(component, graph) for component in components]


def _cycle_in(component: list[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest cycle through the component's first module (breadth-first inside it)."""
    start, members = component[0], set(component)
    parents = {start: None}
    queue = [start]
    for v in queue:
        for w in sorted(graph[v] & members):
            if w == start:
                path = [v]
                while parents[path[-1]] is not None:
                    path.append(parents[path[-1]])
                return path[::-1] + [start]
            if w not in parents:
                parents[w] = v
                queue.append(w)
    raise AssertionError(f"no cycle through {start} in {component}")


def test_importing_the_core_loads_no_heavy_library():
    code = (
        f"import sys, json; sys.path.insert(0, {str(SRC)!r}); import instyle.nn, instyle.functional; "
        "print(json.dumps(sorted(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    heavy = sorted(name for name in loaded if name.split(".")[0] in HEAVY)
    assert not heavy, f"importing instyle.nn loaded {heavy}"
    upper = sorted(name for name in loaded if layer(name) in ("engine", "apps"))
    assert not upper, f"importing instyle.nn loaded modules above the core: {upper}"


def test_the_graph_reader_resolves_every_import_form(tmp_path):
    modules = {name: Path() for name in ("instyle", "instyle.ops", "instyle.ops.reference", "instyle.ops.cpu",
                                          "instyle.ops.cpu.build", "instyle.engine", "instyle.engine.image")}
    source = (
        "import os\nimport instyle.engine.image as im\nfrom instyle import ops\nfrom . import build\n"
        "from ..reference import plane_stats\nfrom .. import registry_attr\n"
        "def f():\n    from instyle.engine.image import load_image\n"
    )
    path = tmp_path / "instance_norm.py"
    path.write_text(source)
    found = imports_of("instyle.ops.cpu.instance_norm", path, modules)
    assert found == {"instyle.engine.image", "instyle.ops", "instyle.ops.cpu.build", "instyle.ops.reference"}
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_imports_run_one_way_without_cycles():
    graph = import_graph()
    unplaced = sorted(module for module in graph if layer(module) is None)
    assert not unplaced, f"modules in no layer: {unplaced}"
    upward = sorted(
        f"{module} ({layer(module)}) imports {target} ({layer(target)})"
        for module, targets in graph.items()
        for target in targets
        if LAYERS.index(layer(target)) > LAYERS.index(layer(module))
    )
    cycles = [" -> ".join(cycle) for cycle in find_cycles(graph)]
    problems = [f"upward import: {line}" for line in upward] + [f"import cycle: {line}" for line in cycles]
    assert not problems, "\n".join(problems)


def _is_triton_kernel(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    for decorator in node.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        if ast.unparse(target) == "triton.jit":
            return True
    return False


def long_functions(limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """``file:line name (n lines)`` for every function over ``limit`` lines, decorators excluded."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not _is_triton_kernel(node):
                length = node.end_lineno - node.lineno + 1
                if length > limit:
                    found.append(f"{path.relative_to(SRC.parent)}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_no_function_over_80_lines():
    offenders = long_functions()
    assert not offenders, f"functions over {MAX_FUNCTION_LINES} lines (Triton kernels excepted):\n" + "\n".join(
        offenders
    )
