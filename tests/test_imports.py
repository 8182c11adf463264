"""Import structure of ``src/spikeguard``: no cycles, and imports at module level.

The module graph is built from the source with :mod:`ast` (nothing is imported), by these rules:

* a node is a module of ``spikeguard``; a package is the node of its ``__init__.py``;
* every ``import`` / ``from ... import`` counts, **including those inside functions**: a lazy
  import still runs, so a cycle through it is still a cycle (it only fails later, at call time);
* imports inside an ``if TYPE_CHECKING:`` block do not count: they never run;
* ``from .pkg import name`` is an edge to the submodule ``pkg.name`` when ``name`` is a submodule,
  otherwise to ``pkg`` itself (its ``__init__`` must run to provide ``name``);
  ``import a.b.c`` is an edge to ``a.b.c``;
* importing ``a.b.c`` first runs the parent packages ``a/__init__.py`` and ``a/b/__init__.py``:
  an edge to each parent that is not a package holding the importing module itself (those are
  already being set up; counting them would tie every module to its own ``__init__``).

Second rule: outside ``spikeguard/cli`` no import of a ``spikeguard`` module or of the standard
library sits inside a function, and a function-level import of a third-party package is allowed
only for the heavy or optional packages of ``_LAZY_OK`` and only with a ``# lazy: <why>`` comment
on its line or the line above. ``cli/`` may import lazily so that ``spikeguard --help`` stays fast.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "spikeguard"

# Third-party packages that may be imported inside a function (with a ``# lazy:`` comment):
# each is optional (an extra, absent from a plain install) or slow to import and needed only by
# one rarely used path. torch, numpy and the other base dependencies are always imported at the top.
# A key is a package or a dotted module: it covers that module and everything under it.
# Not here, so imported at the top like torch and numpy: pillow, tqdm and safetensors (declared
# dependencies, quick to import).
_LAZY_OK: dict[str, str] = {
    "matplotlib": "slow to import (~0.5 s); only figures need it",
    "sklearn": "slow to import (~1 s); only the digits data set needs it",
    "scipy": "not a declared dependency (a fallback exists); slow to import",
    "pyarrow": "optional (parquet extra)",
    "datasets": "optional (Hugging Face datasets)",
    "triton": "optional GPU kernels; slow to import",
    "spikingjelly": "optional (adapter for its neurons)",
    "snntorch": "optional (adapter for its neurons)",
    "aedat": "optional (events extra: AEDAT 4 reader)",
    "torch.utils.tensorboard": "needs the optional tensorboard package (--tensorboard)",
}

# spikeguard modules that import an optional package of _LAZY_OK at their top, so they are
# themselves imported lazily (with a "# lazy:" comment) by the code that can do without them.
_LAZY_INTERNAL: dict[str, str] = {
    "spikeguard.neurons.triton_scan": "imports triton at its top (optional, slow to import)",
}

# Files whose function-level imports are not moved yet because they are being rewritten in
# parallel; the rewrite moves them, then the file leaves this set. Remove the set once empty.
_PENDING: frozenset[str] = frozenset()


@dataclass(frozen=True)
class _Import:
    """One import statement: where it is and what it names."""

    path: Path
    line: int
    targets: tuple[str, ...]  # absolute dotted names (the module for "from X import a, b")
    names: tuple[str, ...]  # the imported names of a "from" import, () for "import X"
    in_function: bool


def _module_files() -> dict[str, Path]:
    """Dotted module name -> source file, for every module of the package."""
    out = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path, module: str) -> list[_Import]:
    """Every import statement of a file that runs (``if TYPE_CHECKING:`` bodies skipped)."""
    is_pkg = path.name == "__init__.py"
    found: list[_Import] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for sub in child.orelse:
                    visit_stmt(sub, in_function)
                continue
            visit_stmt(child, in_function)

    def visit_stmt(child: ast.AST, in_function: bool) -> None:
        if isinstance(child, ast.Import):
            found.append(_Import(path, child.lineno, tuple(a.name for a in child.names), (), in_function))
        elif isinstance(child, ast.ImportFrom):
            base = child.module or ""
            if child.level:
                pkg = module.split(".") if is_pkg else module.split(".")[:-1]
                pkg = pkg[: len(pkg) - (child.level - 1)]
                base = ".".join(pkg + ([base] if base else []))
            names = tuple(a.name for a in child.names)
            found.append(_Import(path, child.lineno, (base,), names, in_function))
        else:
            nested = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            visit(child, nested)

    visit(ast.parse(path.read_text(encoding="utf-8"), str(path)), False)
    return found


def _edges(imp: _Import, modules: dict[str, Path]) -> set[str]:
    """The spikeguard modules an import statement makes run (parents excluded)."""
    out: set[str] = set()
    for target in imp.targets:
        if target != PACKAGE and not target.startswith(PACKAGE + "."):
            continue
        subs = [f"{target}.{n}" for n in imp.names if f"{target}.{n}" in modules]
        out.update(subs)
        if len(subs) < len(imp.names) or not imp.names:
            name = target
            while name not in modules:  # "import a.b.attr"-style: the deepest real module
                name = name.rpartition(".")[0]
            out.add(name)
    return out


def _parents(module: str) -> set[str]:
    """The packages above ``module`` (``a.b.c`` -> ``{a, a.b}``)."""
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def import_graph() -> dict[str, set[str]]:
    """Module -> the spikeguard modules it imports (function-level imports included)."""
    modules = _module_files()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        deps: set[str] = set()
        for imp in _imports(path, module):
            deps |= _edges(imp, modules)
        deps |= {parent for dep in deps for parent in _parents(dep) if parent not in _parents(module)}
        deps.discard(module)
        graph[module] = deps
    return graph


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm (iterative): the components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    comps: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    comp.append(top)
                    if top == node:
                        break
                if len(comp) > 1:
                    comps.append(sorted(comp))
    return comps


def _a_cycle(graph: dict[str, set[str]], comp: list[str]) -> list[str]:
    """One cycle inside a strongly connected component, as a closed path (first == last)."""
    members = set(comp)
    start = comp[0]
    # Breadth-first from start back to start, inside the component: a shortest cycle.
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt_frontier = []
        for node in frontier:
            for dep in sorted(graph[node] & members):
                if dep == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [start, *reversed(path[:-1]), start] if node != start else [start]
                if dep not in parent:
                    parent[dep] = node
                    nxt_frontier.append(dep)
        frontier = nxt_frontier
    raise AssertionError(f"no cycle in component {comp}")  # cannot happen for a real SCC


def find_cycles() -> list[str]:
    """One printed cycle ``a -> b -> a`` per strongly connected component of the graph."""
    graph = import_graph()
    short = {m: m.removeprefix(PACKAGE + ".") for m in graph}
    out = []
    for comp in _strongly_connected(graph):
        cycle = " -> ".join(short[m] for m in _a_cycle(graph, comp))
        out.append(f"{cycle}   (component: {', '.join(short[m] for m in comp)})")
    return out


def test_no_import_cycles() -> None:
    cycles = find_cycles()
    assert not cycles, "import cycles in src/spikeguard:\n" + "\n".join(cycles)


def _top_name(imp: _Import) -> str:
    return imp.targets[0].split(".")[0]


def _covered(imp: _Import, keys: dict[str, str]) -> bool:
    """Whether the import names only modules that are a key of ``keys`` or under one."""

    def under(name: str) -> bool:
        return any(name == k or name.startswith(k + ".") for k in keys)

    return all(under(t) or (imp.names and all(under(f"{t}.{n}") for n in imp.names)) for t in imp.targets)


def _has_lazy_comment(lines: list[str], line: int) -> bool:
    here = lines[line - 1]
    above = lines[line - 2] if line >= 2 else ""
    return "# lazy:" in here or above.strip().startswith("# lazy:")


def function_level_problems() -> list[str]:
    """``file:line: why`` for each function-level import outside ``cli/`` that is not allowed."""
    problems = []
    for module, path in _module_files().items():
        if module == f"{PACKAGE}.cli" or module.startswith(f"{PACKAGE}.cli."):
            continue
        rel = path.relative_to(ROOT).as_posix()
        lines = path.read_text(encoding="utf-8").splitlines()
        for imp in _imports(path, module):
            if not imp.in_function:
                continue
            top = _top_name(imp)
            where = f"{rel}:{imp.line}"
            if rel in _PENDING:
                continue
            if top == PACKAGE:
                if not _covered(imp, _LAZY_INTERNAL):
                    problems.append(f"{where}: spikeguard import inside a function")
                elif not _has_lazy_comment(lines, imp.line):
                    problems.append(f"{where}: lazy import of {imp.targets[0]} without a '# lazy:' comment")
            elif top in sys.stdlib_module_names:
                problems.append(f"{where}: standard-library import ({top}) inside a function")
            elif not _covered(imp, _LAZY_OK):
                problems.append(f"{where}: {top} is not a heavy/optional package (_LAZY_OK)")
            elif not _has_lazy_comment(lines, imp.line):
                problems.append(f"{where}: lazy import of {top} without a '# lazy:' comment")
    return problems


def test_imports_at_module_level() -> None:
    problems = function_level_problems()
    assert not problems, "function-level imports outside cli/:\n" + "\n".join(problems)


def test_graph_rules_on_this_package() -> None:
    """The graph builder resolves relative, submodule and TYPE_CHECKING imports as documented."""
    graph = import_graph()
    # "from .errors import X" in the package __init__ is an edge to the submodule's module.
    assert f"{PACKAGE}.errors" in graph[PACKAGE]
    # "from .cli.main import main" in __main__ resolves the relative import.
    assert f"{PACKAGE}.cli.main" in graph[f"{PACKAGE}.__main__"]
    assert all(dep in graph for deps in graph.values() for dep in deps)


def test_version_has_one_source() -> None:
    """pyproject.toml reads the version from ``_version.py`` instead of repeating it."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib

    project = tomllib.loads((ROOT.parent / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in project["project"]
    assert "version" in project["project"]["dynamic"]
    attr = project["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == f"{PACKAGE}._version.__version__"
    import spikeguard

    assert spikeguard.__version__ == spikeguard._version.__version__


#: The layers from the top (docs/architecture.md); a module may import its own layer and those below.
_TOP_LAYERS: tuple[str, ...] = ("spikeguard.cli", "spikeguard.jobs")


def layer_violations(graph: dict[str, set[str]] | None = None) -> list[str]:
    """``a -> b`` for every import of the CLI or the jobs layer from a module below it."""
    graph = import_graph() if graph is None else graph

    def rank(module: str) -> int:  # 0 = cli, 1 = jobs, 2 = everything below
        for i, top in enumerate(_TOP_LAYERS):
            if module == top or module.startswith(top + "."):
                return i
        return len(_TOP_LAYERS)

    # the package root (public API) and `python -m spikeguard` (the entry point) sit above every layer
    entry = {PACKAGE, f"{PACKAGE}.__main__"}
    return sorted(f"{a} -> {b}" for a, deps in graph.items() if a not in entry for b in deps if rank(b) < rank(a))


def test_imports_point_down_the_layers() -> None:
    bad = layer_violations()
    assert not bad, "imports from a lower layer up to cli/ or jobs/:\n" + "\n".join(bad)
    # the rule itself: a building block importing a job is caught
    assert layer_violations({"spikeguard.evaluation.engine": {"spikeguard.jobs.train"}}) == [
        "spikeguard.evaluation.engine -> spikeguard.jobs.train"
    ]
