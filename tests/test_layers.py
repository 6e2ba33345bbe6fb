"""The package's layers import downward only: config -> data -> evaluation -> tasks -> models -> engine -> export, api, cli.

Every import counts, function-local ones included; those under ``if TYPE_CHECKING:`` do not run
and are left out.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "centernet"

# Module or sub-package -> layer; a module imports only from its own layer or lower ones.
LAYERS = {
    "config": 0, "extras": 0, "configs": 0, "threads": 0,
    "data": 1,
    "evaluation": 2,
    "tasks": 3,
    "models": 4,
    "engine": 5,
    "export": 6, "api": 6, "cli": 6,
    "__init__": 7, "__main__": 7,
}  # fmt: skip


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS[parts[1] if len(parts) > 1 else "__init__"]


def _runtime_imports(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every ``centernet`` import in ``path`` that runs (not under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text())
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for sub in node.body for n in ast.walk(sub)}
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("centernet"):
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("centernet")]
    return found


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_every_import_points_to_the_same_or_a_lower_layer():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        own = _module_name(path)
        for line, target in _runtime_imports(path):
            if target != "centernet" and _layer(target) > _layer(own if own != "centernet" else "centernet.__init__"):
                upward.append(f"{path.relative_to(PACKAGE)}:{line} imports {target}")
    assert not upward, "imports reaching up a layer:\n" + "\n".join(upward)


def test_no_import_cycle_between_modules():
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    edges = {m: set() for m in modules}
    for module, path in modules.items():
        for _, target in _runtime_imports(path):
            found = resolve(target)
            # A package's own modules importing its __init__ (or it them) is Python's normal package import.
            if found and found != module and not module.startswith(found + "."):
                edges[module].add(found)

    state: dict[str, int] = {}

    def cycle_from(module: str, trail: list[str]) -> list[str] | None:
        state[module] = 1
        for target in sorted(edges[module]):
            if state.get(target) == 1:
                return trail + [module, target]
            if target not in state and (found := cycle_from(target, trail + [module])):
                return found
        state[module] = 2
        return None

    for module in sorted(modules):
        if module not in state:
            cycle = cycle_from(module, [])
            assert cycle is None, "import cycle: " + " -> ".join(cycle[cycle.index(cycle[-1]):])
