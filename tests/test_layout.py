"""The package's layout keeps its promises: no import cycles among seenn's modules, counting the imports inside
functions too (a cycle hidden in a function is still a cycle), and every import goes down the layers
(docs/architecture.md draws them) or stays within one."""

import ast
from pathlib import Path

import seenn

ROOT = Path(seenn.__file__).parent


def _modules() -> dict[str, Path]:
    mods = {}
    for p in ROOT.rglob("*.py"):
        parts = p.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = p
    return mods


def _relative_target(package: str, node: ast.ImportFrom) -> str:
    """The module a relative ``from ... import`` in ``package`` names."""
    base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(mods: dict[str, Path]) -> dict[str, set]:
    edges = {m: set() for m in mods}
    for m, p in mods.items():
        package = m if p.name == "__init__.py" else m.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    target = _relative_target(package, node)
                elif node.module and node.module.split(".")[0] == "seenn":
                    target = node.module
                else:
                    continue
                subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in mods]
                # ``from . import sub`` imports the submodule (its package is loaded for any of its modules anyway)
                for cand in subs if len(subs) == len(node.names) else [target] + subs:
                    if cand in mods and cand != m:
                        edges[m].add(cand)
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name in mods and a.name != m:
                        edges[m].add(a.name)
    return edges


def _cycles(edges: dict[str, set]) -> list[list[str]]:
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    edges = _imports(_modules())
    assert sum(len(e) for e in edges.values()) > 100  # the reader sees the imports
    assert _cycles(edges) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_over_500_lines():
    long = {name: len(p.read_text().splitlines()) for name, p in _modules().items()}
    assert {n: k for n, k in long.items() if k > 500} == {}


# the layers, bottom first: a module may import from its own layer and the ones below, never from above
LAYERS = [
    ("seenn.errors", "seenn._version"),
    ("seenn.io",),  # atomic files, output folders, the typed schema and its bounds
    ("seenn.nn", "seenn.data", "seenn.exits"),  # neuron math; datasets and events; exit rules and policies
    ("seenn.models",),
    ("seenn.runtime", "seenn.interop"),  # the runner, inference rewrites, precision; other frameworks' networks
    ("seenn.analysis",),  # metrics, evaluation, calibration, energy, robustness, explain, bench, report, audit
    ("seenn.runs", "seenn.training", "seenn.conversion"),  # run folders and the workflows that write them
    ("seenn.serve",),
    ("seenn.cli", "seenn.__main__", "seenn"),  # the command line; the package face (lazy names)
]


def _layer(module: str) -> int:
    best = None
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if module == p or module.startswith(p + "."):
                if best is None or len(p) > best[1]:
                    best = (i, len(p))
    assert best is not None, f"{module} is in no layer: add it to LAYERS (and docs/architecture.md)"
    return best[0]


def test_imports_go_down_the_layers():
    mods = _modules()
    edges = _imports(mods)
    up = sorted(f"{m} -> {t}" for m, ts in edges.items() for t in ts if _layer(t) > _layer(m))
    assert up == []
    # the reader sees every layer used
    assert {_layer(m) for m in mods} == set(range(len(LAYERS)))


def test_no_flat_modules_but_the_base():
    """Every implementation module lives in its layer's subpackage; the top holds only the package face, its
    entry point and the two base modules."""
    top = sorted(p.name for p in ROOT.glob("*.py"))
    assert top == ["__init__.py", "__main__.py", "_version.py", "errors.py"]


def test_low_layer_names_match_their_registries():
    """The schema (io, below models and nn) names the models and surrogates itself; these are the registries'."""
    from seenn.io.schema import MODEL_NAMES, SURROGATE_NAMES
    from seenn.models import MODELS
    from seenn.nn.surrogate import SURROGATES
    assert set(MODEL_NAMES) == set(MODELS)
    assert set(SURROGATE_NAMES) == set(SURROGATES)


def test_version_is_the_projects():
    import re
    text = (ROOT.parent.parent / "pyproject.toml").read_text()
    assert re.search(r'^version = "([^"]+)"', text, re.M).group(1) == seenn.__version__


def test_every_subpackage_is_installed():
    """A folder of modules without ``__init__.py`` imports from a checkout but is left out of an installed wheel
    (setuptools finds packages by their ``__init__``)."""
    from setuptools import find_packages

    found = set(find_packages(str(ROOT.parent)))
    folders = {".".join(p.parent.relative_to(ROOT.parent).parts) for p in ROOT.rglob("*.py")}
    assert folders - found == set()


# seenn's own modules import each other at their tops; an import inside a function is left only for an optional
# extra (the server's packages), so a function-level import cannot hide a cycle or a layer crossed upward
EXTRAS_IMPORTED_LATE = {("seenn.cli.evaluate", "seenn.serve")}


def test_seenn_imports_inside_functions_only_for_optional_extras():
    late = set()
    for m, p in _modules().items():
        package = m if p.name == "__init__.py" else m.rsplit(".", 1)[0]
        for fn in ast.walk(ast.parse(p.read_text())):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom) and node.level:
                    late.add((m, _relative_target(package, node)))
                elif isinstance(node, (ast.Import, ast.ImportFrom)):
                    names = [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                    late |= {(m, n) for n in names if n and n.split(".")[0] == "seenn"}
    assert late == EXTRAS_IMPORTED_LATE


def test_the_command_line_loads_only_the_command_it_runs():
    import subprocess
    import sys

    code = ("import sys, seenn.cli\n"
            "try:\n    seenn.cli.main(['eval', '--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'seenn.cli.train', 'seenn.cli.evaluate') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"  # --help builds every parser and imports no command module
    from seenn.cli import command
    from seenn.cli.parser import build_parser

    def named(parser):
        for action in parser._actions:
            for sub in (action.choices or {}).values() if isinstance(action.choices, dict) else ():
                yield from named(sub)
        if parser.get_default("func"):
            yield parser.get_default("func")

    funcs = set(named(build_parser()))
    assert len(funcs) == 20 and all(callable(command(f)) for f in funcs)  # every command the parser names exists
