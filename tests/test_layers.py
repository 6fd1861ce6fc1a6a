"""The package's layers: imports go one way only (every import counts, also those inside functions), and
no module imports one that imports it back."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "zhembed"

BASE = {"errors", "atomic", "progress", "textio", "modeldir"}
# Each part of zhembed, and the parts it may import. The runtime knows nothing of making, training, serving,
# searching or scaling out; making builds on the runtime; training on making and evaluation; the CLI on all.
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "atomic": set(),
    "progress": set(),
    "textio": {"errors", "atomic"},
    "modeldir": {"errors", "atomic"},
    "runtime": BASE,
    "eval": BASE | {"runtime"},
    "search": BASE | {"runtime"},
    "serve": BASE | {"runtime", "search"},
    "scale": BASE | {"runtime"},
    "make": BASE | {"runtime"},
    "train": BASE | {"runtime", "make", "eval"},
    "cli": BASE | {"runtime", "eval", "search", "serve", "scale", "make", "train"},
    "__init__": {"errors", "runtime", "search"},
    "__main__": {"cli"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p) for p in PACKAGE.rglob("*.py")}


def imported_modules(path: Path) -> set[str]:
    """Every zhembed module that `path` imports, resolved from relative and absolute imports."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            found |= {f"{module}.{a.name}" if f"{module}.{a.name}" in MODULES else module for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {m for m in found if m in MODULES and m != name}


def part(module: str) -> str:
    """The layer a module belongs to: zhembed.runtime.encoder -> runtime; zhembed -> __init__."""
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else "__init__"


GRAPH = {module_name(p): imported_modules(p) for p in sorted(PACKAGE.rglob("*.py"))}
PACKAGES = {module_name(p) for p in PACKAGE.rglob("__init__.py")}


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_go_one_way(module):
    layer = part(module)
    assert layer in ALLOWED, f"{module}: a new part of zhembed; give it a place in ALLOWED"
    wrong = sorted(m for m in GRAPH[module] if part(m) != layer and part(m) not in ALLOWED[layer])
    assert not wrong, f"{module} ({layer}) must not import {wrong}"


def test_no_import_cycles():
    def cycle_from(start: str) -> list[str] | None:
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in GRAPH[node] - PACKAGES:  # as Python and import_cycles.py: a package's re-exports are no cycle
                if nxt == start:
                    return path + [start]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
        return None

    cycles = [c for m in GRAPH if (c := cycle_from(m))]
    assert not cycles, f"import cycles: {cycles}"


def test_the_runtime_needs_only_the_core_install():
    third_party = set()
    for path in (PACKAGE / "runtime").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                third_party |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level:
                third_party.add((node.module or "").split(".")[0])
    # torch and transformers only behind require("train", ...): the torch backend and vocab.txt tokenizers
    assert third_party - set(sys.stdlib_module_names) - {"__future__", ""} == {
        "numpy", "onnxruntime", "sentencepiece", "tokenizers", "torch", "transformers"}  # tqdm through zhembed.progress


MODEL_DIR_FILES = {"config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "model.safetensors",
                   "pytorch_model.bin", "modules.json", "1_Pooling", "2_Normalize", "sentence_bert_config.json",
                   "config_sentence_transformers.json", "model.onnx", "model_qint8.onnx", "calibration.json"}


def test_only_modeldir_names_the_files_of_a_model_directory():
    """Every other module goes through zhembed/modeldir.py, so the layout has one owner."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "modeldir.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and (
                    node.value in MODEL_DIR_FILES or any(node.value.endswith("/" + f) for f in MODEL_DIR_FILES)):
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {node.value!r}")
    assert not offenders, "\n".join(offenders)


MAX_LINES, MAX_PARAMETERS = 60, 8
# bounded_protocol returns a class it defines
SIZE_EXEMPT = {("serve", "bounded_protocol")}


def test_functions_stay_short_and_take_few_parameters():
    """No function over MAX_LINES lines, no public one over MAX_PARAMETERS parameters (the CLI's commands take
    their options as parameters, so they are exempt from the count)."""
    too_big = []
    for path in PACKAGE.rglob("*.py"):
        part = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) or (part, node.name) in SIZE_EXEMPT:
                continue
            lines = node.end_lineno - node.lineno + 1
            params = [a.arg for a in node.args.posonlyargs + node.args.args + node.args.kwonlyargs
                      if a.arg not in ("self", "cls")]
            public = not node.name.startswith("_") and part != "cli"
            if lines > MAX_LINES or (public and len(params) > MAX_PARAMETERS):
                too_big.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}: {lines} lines, "
                               f"{len(params)} parameters")
    assert not too_big, "\n".join(too_big)


def test_the_server_app_is_wiring_over_one_inference_path():
    """create_app only wires handlers, admission and the queue (at most 40 lines); only serve/infer.py tokenizes
    request texts or submits them to the queue (serve/batching.py, the queue itself, may hand its groups to its
    own lanes' executor)."""
    app = ast.parse((PACKAGE / "serve" / "app.py").read_text(encoding="utf-8"))
    create_app = next(n for n in app.body if isinstance(n, ast.FunctionDef) and n.name == "create_app")
    assert create_app.end_lineno - create_app.lineno + 1 <= 40
    for path in (PACKAGE / "serve").glob("*.py"):
        calls = {n.func.attr for n in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                 if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)}
        forbidden = {"tokenize", "passages", "split_long"} | ({"submit"} if path.name != "batching.py" else set())
        if path.name != "infer.py":
            assert not calls & forbidden, path.name
