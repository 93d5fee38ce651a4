"""The architecture holds: imports run only downward (the core <- the TensorFlow side and the
onnxruntime side, never each other <- the applications), no private name is used outside its
module, the developer tools use only public API, and no function grows past 60 lines."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Source folder -> installed package (setup.cfg's package_dir).
PACKAGES = {"onnx_mobilenets": "onnx_mobilenets", "conversion": "onnx_mobilenets.conversion",
            "runtime": "onnx_mobilenets.runtime"}
# Applications stand on the runtime (the Ray Serve service); the command line on top runs them all.
FLOORS = {"core": 0, "conversion": 1, "runtime": 1, "serving": 2, "cli": 3}
MAX_FUNCTION_LINES = 60
LONG_BY_NATURE = {"onnx_mobilenets.cli.parser.build_parser"}  # one add_argument per line
# The package's __init__ is the public face over all floors: it re-exports OnnxMobileNet (loaded lazily).
PUBLIC_FACE = "onnx_mobilenets"


def floor_of(module: str) -> str:
    """Which floor an onnx_mobilenets module stands on."""
    parts = module.split(".")
    if parts[0] != "onnx_mobilenets":
        return ""
    if len(parts) > 1 and parts[1] in ("conversion", "runtime", "serving", "cli"):
        return parts[1]
    return "core"


def source_files(root: Path = REPO):
    """(installed module name, path) of every Python file of the package."""
    for folder, package in PACKAGES.items():
        for path in sorted((root / folder).rglob("*.py")):
            relative = path.relative_to(root / folder).with_suffix("")
            parts = [p for p in relative.parts if p != "__init__"]
            yield ".".join([package, *parts]), path


def facade_runtime_names(root: Path = REPO) -> set:
    """The names the package's facade hands out lazily from the runtime (``from onnx_mobilenets import
    OnnxMobileNet`` is an import of the runtime): those of ``runtime/__init__.py``'s ``__all__``."""
    for node in ast.parse((root / "runtime" / "__init__.py").read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in node.targets):
            return set(ast.literal_eval(node.value))
    return set()


def _relative(module: str, is_package: bool, level: int, name: str) -> str:
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[:len(base) - level + 1]
    return ".".join(base + ([name] if name else []))


def _import_module_call(node, module: str, is_package: bool):
    """The module that ``importlib.import_module("NAME"[, package])`` with a literal NAME imports,
    else None. A relative NAME is taken from `package` as importlib does (``__package__``: this
    module's package; ``__name__``: this module's name, itself a package's in an ``__init__``)."""
    function = node.func
    called = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", "")
    if called != "import_module" or not node.args or not isinstance(node.args[0], ast.Constant):
        return None
    name = node.args[0].value
    if not isinstance(name, str):
        return None
    level = len(name) - len(name.lstrip("."))
    if not level:
        return name
    anchor = node.args[1] if len(node.args) > 1 else None
    package = module if (getattr(anchor, "id", "") == "__name__" or is_package) else module.rpartition(".")[0]
    base = package.split(".")
    return ".".join(base[:len(base) - level + 1] + [name[level:]])


def imports_of(module: str, path: Path, root: Path = REPO):
    """(imported module, line, imported names) for every import in the file, functions included, and
    every ``importlib.import_module`` of a literal name."""
    is_package = path.name == "__init__.py"
    lazy_runtime = facade_runtime_names(root)
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno, ()
        elif isinstance(node, ast.ImportFrom):
            target = _relative(module, is_package, node.level, node.module) if node.level else node.module
            names = tuple(a.name for a in node.names)
            yield target, node.lineno, names
            for name in names:  # `from . import runtime` imports a module
                yield f"{target}.{name}", node.lineno, ()
                if target == PUBLIC_FACE and name in lazy_runtime:
                    yield f"{PUBLIC_FACE}.runtime", node.lineno, ()
        elif isinstance(node, ast.Call):
            named = _import_module_call(node, module, is_package)
            if named:
                yield named, node.lineno, ()


def wrong_way_arrows(root: Path = REPO) -> list:
    """One line per import statement that runs upward or sideways, naming it."""
    found, seen = [], set()
    for module, path in source_files(root):
        if module == PUBLIC_FACE:
            continue
        mine = floor_of(module)
        for target, line, _ in imports_of(module, path, root):
            theirs = floor_of(target)
            if not theirs or theirs == mine or (path, line) in seen:
                continue
            upward = FLOORS[theirs] > FLOORS[mine]
            sideways = FLOORS[theirs] == FLOORS[mine]
            if upward or sideways:
                kind = "upward" if upward else "sideways"
                seen.add((path, line))
                found.append(f"{path.relative_to(root)}:{line}: {module} ({mine}) imports {target} ({theirs}): {kind}")
    return found


def private_names_used_elsewhere(root: Path = REPO) -> list:
    found = []
    for module, path in source_files(root):
        for target, line, names in imports_of(module, path):
            if floor_of(target) and any(n.startswith("_") and not n.startswith("__") for n in names):
                found.append(f"{path.relative_to(root)}:{line}: imports private {names} from {target}")
    return found


def copy_of_the_package(root: Path) -> Path:
    """The package's sources copied below `root`, for a check to be run on with something planted."""
    for folder in PACKAGES:
        for path in (REPO / folder).rglob("*.py"):
            copy = root / folder / path.relative_to(REPO / folder)
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_text(path.read_text())
    return root


def test_imports_run_only_downward():
    assert wrong_way_arrows() == []


def test_the_check_names_an_upward_import(tmp_path):
    """The layering check on a copy of the tree with one planted upward and one sideways import."""
    copy_of_the_package(tmp_path)
    (tmp_path / "onnx_mobilenets" / "planted.py").write_text(
        "def f():\n    from .runtime import OnnxMobileNet\n    return OnnxMobileNet\n")
    (tmp_path / "conversion" / "planted.py").write_text("from onnx_mobilenets.runtime.model import OnnxMobileNet\n")
    # The facade's lazy names are the runtime; a module named to importlib is imported.
    (tmp_path / "conversion" / "facade.py").write_text("from onnx_mobilenets import OnnxMobileNet, get_variant\n")
    (tmp_path / "conversion" / "dynamic.py").write_text(
        "import importlib\n\n\ndef f():\n    return importlib.import_module('onnx_mobilenets.runtime.stream')\n")
    (tmp_path / "runtime" / "relative.py").write_text(
        "from importlib import import_module\n\nconvert = import_module('..conversion.convert', __package__)\n")
    found = wrong_way_arrows(tmp_path)
    assert any("onnx_mobilenets/planted.py:2" in f and "upward" in f for f in found), found
    assert any("conversion/planted.py:1" in f and "sideways" in f for f in found), found
    assert any("conversion/facade.py:1" in f and "sideways" in f for f in found), found
    assert any("conversion/dynamic.py:5" in f and "sideways" in f for f in found), found
    assert any("runtime/relative.py:3" in f and "sideways" in f for f in found), found
    assert len(found) == 5, found


def test_no_private_name_crosses_a_module():
    assert private_names_used_elsewhere() == []


def test_tools_use_public_api_only():
    """The developer tools import only what the package's public modules export (no private names)."""
    found = []
    for path in sorted((REPO / "tools").rglob("*.py")):
        for target, line, names in imports_of("tools", path):
            if target and target.startswith("onnx_mobilenets") and any(n.startswith("_") for n in names):
                found.append(f"{path.relative_to(REPO)}:{line}: {target} {names}")
    assert found == []


def test_no_function_is_longer_than_60_lines():
    long = []
    for module, path in source_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES and f"{module}.{node.name}" not in LONG_BY_NATURE:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}: {lines} lines")
    assert long == []


@pytest.mark.parametrize(
    "module, floor",
    [
        ("onnx_mobilenets.catalogue", "core"),
        ("onnx_mobilenets", "core"),
        ("onnx_mobilenets.conversion.export", "conversion"),
        ("onnx_mobilenets.runtime", "runtime"),
        ("onnx_mobilenets.cli.verify", "cli"),
        ("onnx_mobilenets.serving", "serving"),
        ("numpy", ""),
    ],
)
def test_floors(module, floor):
    assert floor_of(module) == floor


def module_graph(root: Path = REPO) -> dict:
    """{module: the package's modules it imports}, imports inside functions included. ``from P import
    m`` of a submodule m is an import of P.m alone (a package's __init__ runs first whatever is
    imported from it: that is no edge), and a facade name the runtime defines an import of the runtime."""
    modules = {module: path for module, path in source_files(root)}
    graph = {}
    for module, path in modules.items():
        targets = set()
        for target, _, names in imports_of(module, path, root):
            if not target or not floor_of(target):
                continue
            if names and all(f"{target}.{n}" in modules for n in names):
                continue  # `from P import m, n` of submodules: their own entries are the edges
            while target not in modules and "." in target:  # a name inside a module: the module
                target = target.rpartition(".")[0]
            if target in modules and target != module:
                targets.add(target)
        graph[module] = targets
    return graph


def import_circles(graph: dict) -> list:
    """The strongly connected groups of more than one module (Tarjan's algorithm), sorted."""
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(module):
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in sorted(graph.get(module, ())):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                circles.append(sorted(group))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return sorted(circles)


def test_no_import_circle():
    assert import_circles(module_graph()) == []


def test_the_circle_check_finds_a_circle_through_a_function_level_import(tmp_path):
    copy_of_the_package(tmp_path)
    (tmp_path / "conversion" / "first.py").write_text("from . import second\n")
    (tmp_path / "conversion" / "second.py").write_text("def f():\n    from .first import g\n    return g\n")
    assert import_circles(module_graph(tmp_path)) == [["onnx_mobilenets.conversion.first",
                                                       "onnx_mobilenets.conversion.second"]]


# What an artifact records is read in one module: the metadata entries themselves, and the readers
# that hand them out.
ARTIFACT_MODULE = "onnx_mobilenets.artifact"
METADATA_READERS = {"read_metadata", "custom_metadata_map", "get_modelmeta", "metadata_props"}
METADATA_KEYS = {"variant", "family", "alpha", "resolution", "output", "classes", "preprocessing", "labels",
                 "weights", "versions", "opset", "parity", "golden", "quantization", "batch"}


def metadata_read_outside_the_artifact_module(root: Path = REPO) -> list:
    """Lines outside `onnx_mobilenets.artifact` (and the protobuf reader it uses) that read an
    artifact's metadata: a metadata reader named, or a metadata key looked up in something called
    meta or metadata. (Writing the metadata_props of a model being made is the converter's.)"""
    found = []
    for module, path in source_files(root):
        if module in (ARTIFACT_MODULE, "onnx_mobilenets.model_bytes"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            name = node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else None
            if name in METADATA_READERS and not _writes_metadata(node, path):
                found.append(f"{path.relative_to(root)}:{node.lineno}: {name}")
            if (isinstance(node, ast.Subscript) and getattr(node.value, "id", getattr(node.value, "attr", ""))
                    in ("meta", "metadata") and isinstance(node.slice, ast.Constant)
                    and node.slice.value in METADATA_KEYS):
                found.append(f"{path.relative_to(root)}:{node.lineno}: metadata[{node.slice.value!r}]")
    return found


def _writes_metadata(node, path: Path) -> bool:
    """``proto.metadata_props.add()`` / ``del proto.metadata_props[:]``: what a converter writes."""
    line = path.read_text().splitlines()[node.lineno - 1]
    return isinstance(node, ast.Attribute) and node.attr == "metadata_props" and (
        "metadata_props.add()" in line or "del " in line)


def test_only_the_artifact_module_reads_what_an_artifact_records():
    assert metadata_read_outside_the_artifact_module() == []


def test_the_metadata_check_names_a_reader_elsewhere(tmp_path):
    copy_of_the_package(tmp_path)
    (tmp_path / "runtime" / "planted.py").write_text(
        "import json\n\n\ndef f(session, meta):\n    m = session.get_modelmeta().custom_metadata_map\n"
        "    return json.loads(meta['weights']), m\n")
    found = metadata_read_outside_the_artifact_module(tmp_path)
    assert found == ["runtime/planted.py:5: custom_metadata_map", "runtime/planted.py:5: get_modelmeta",
                     "runtime/planted.py:6: metadata['weights']"], found


def test_one_place_makes_onnxruntime_sessions():
    """Sessions and their options are made in `onnx_mobilenets.sessions` alone."""
    found = []
    for module, path in source_files():
        if module == "onnx_mobilenets.sessions":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                called = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                if called in ("InferenceSession", "SessionOptions"):
                    found.append(f"{path.relative_to(REPO)}:{node.lineno}: {called}()")
    assert found == []
