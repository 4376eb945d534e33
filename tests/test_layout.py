"""The package's structure, kept: no import cycles between ebjdat's modules (imports inside
functions included) and no private name imported across modules."""
import ast
from pathlib import Path

import ebjdat

ROOT = Path(ebjdat.__file__).parent


def _modules() -> dict:
    mods = {}
    for p in ROOT.rglob("*.py"):
        parts = ("ebjdat",) + p.relative_to(ROOT).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return mods


def _imports(mods: dict):
    """{module: {imported ebjdat module}}, and (module, source, name) of private imports."""
    edges, private = {m: set() for m in mods}, []
    for m, p in mods.items():
        package = m if p.name == "__init__.py" else m.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(p.read_text())):
            for name in _loaded_by_name(node):   # importlib.import_module("ebjdat....") and the like
                if name in mods and name != m and not m.startswith(name + "."):   # not its own package (resources)
                    edges[m].add(name)
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            if not base.startswith("ebjdat"):
                continue
            for a in node.names:
                target = f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base
                if target in mods and target != m:
                    edges[m].add(target)
                if a.name.startswith("_") and not a.name.startswith("__"):
                    private.append((m, base, a.name))
    return edges, private


def _loaded_by_name(node) -> list[str]:
    """The ebjdat modules a node names as a string constant (what importlib loads: a
    dict of module names, a call's argument); such imports count as edges too."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("ebjdat."):
        return [node.value]
    return []


def _cycles(edges: dict) -> list:
    def reaches(a, b, seen):
        for t in edges[a]:
            if t == b or (t not in seen and not seen.add(t) and reaches(t, b, seen)):
                return True
        return False
    return [(m, t) for m in edges for t in edges[m] if reaches(t, m, set())]


def _package(module: str) -> str:
    """ebjdat.train.loop -> ebjdat.train; a top-level module (ebjdat.build) is its own floor."""
    parts = module.split(".")
    return ".".join(parts[:2])


def test_no_import_cycles_between_packages():
    """Packages are floors: train and evaluate, ops and sampling, ... never import each
    other both ways, even where no single pair of modules forms a loop."""
    mods = _modules()
    edges, _ = _imports(mods)
    floors = {}
    for m, targets in edges.items():
        for t in targets:
            if _package(t) != _package(m) and _package(t) != "ebjdat":
                floors.setdefault(_package(m), set()).add(_package(t))
    for v in list(floors.values()):
        for t in v:
            floors.setdefault(t, set())
    assert _cycles(floors) == []
    assert "ebjdat.evaluate" not in floors.get("ebjdat.train", set())
    assert "ebjdat.train" not in floors.get("ebjdat.evaluate", set())
    assert "ebjdat.bench" not in floors.get("ebjdat.published", set())


def test_no_import_cycles_and_no_private_names_across_modules():
    mods = _modules()
    edges, private = _imports(mods)
    assert private == []

    assert _cycles(edges) == []
    assert "ebjdat.build" in edges["ebjdat.train.trainer"] and "ebjdat.build" in edges["ebjdat.evaluate.trained"]
