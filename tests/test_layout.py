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


def test_no_import_cycles_and_no_private_names_across_modules():
    mods = _modules()
    edges, private = _imports(mods)
    assert private == []

    def reaches(a, b, seen):
        for t in edges[a]:
            if t == b or (t not in seen and not seen.add(t) and reaches(t, b, seen)):
                return True
        return False
    cycles = [(m, t) for m in mods for t in edges[m] if reaches(t, m, set())]
    assert cycles == []
    assert "ebjdat.build" in edges["ebjdat.train.trainer"] and "ebjdat.build" in edges["ebjdat.evaluate.trained"]
