"""The import graph of ``continuum`` matches the layers docs/architecture.md draws.

Every ``import continuum.X`` / ``from continuum.X import`` in the package (module level or
inside a function) is checked against the table below, which is the diagram of
docs/architecture.md "Layers" written as data; its documented exceptions are listed by file.
A new cross-layer import fails here: either move the code or change the docs and this table
together, with the reason.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "continuum"

# Layers, lowest first; a module may import its own layer and the layers below it.
LAYERS = [
    {"errors", "sampling_params", "request", "outputs", "config", "knobs", "cache_dir", "progress", "threads",
     "snapshot"},
    {"kv"},
    {"kv_ttl"},
    {"scheduler"},
    {"ops", "layers", "models"},      # the model code; see MODEL_USERS
    {"engine"},
    {"bench", "sim"},                 # the replay loop (bench/replayer.py) drives both targets
    {"entrypoints", "llm", "distributed", "cli", "__init__"},
]
# Only the engine runs models; these files also do, for the reasons docs/architecture.md gives.
MODEL_USERS = {"engine"}
EXCEPTIONS = {
    # config validates policy knobs from the policy registry (imported when first needed).
    ("config", "scheduler"): {"config.py"},
    # The GGUF trace converter tokenizes with the model's own tokenizer.
    ("bench", "models"): {"bench/converters.py"},
    # The profiler measures the real engine's step times for the cost model.
    ("sim", "models"): {"sim/measure.py"},
}
NO_TORCH = {"kv", "kv_ttl", "scheduler"}


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _rank(pkg: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if pkg in layer)


def _imports(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append(node.module)
    return out


def _files():
    for f in sorted(ROOT.rglob("*.py")):
        rel = f.relative_to(ROOT)
        src = rel.parts[0].removesuffix(".py") if len(rel.parts) > 1 else rel.stem
        yield f, rel.as_posix(), src


def test_every_package_is_in_a_layer():
    pkgs = {src for _, _, src in _files()}
    assert pkgs <= set().union(*LAYERS), f"packages in no layer: {pkgs - set().union(*LAYERS)}"


def test_imports_follow_the_documented_layers():
    bad = []
    for f, rel, src in _files():
        for mod in _imports(f):
            if not mod.startswith("continuum."):
                continue
            dst = _package(mod)
            if dst == src or rel in EXCEPTIONS.get((src, dst), ()):
                continue
            upward = _rank(dst) > _rank(src)
            model_code = dst in {"ops", "layers", "models"} and _rank(src) != _rank(dst) and src not in MODEL_USERS
            if upward or model_code:
                bad.append(f"{rel}: imports {mod}")
    assert not bad, "imports across the documented layers:\n" + "\n".join(bad)


def test_scheduling_core_imports_no_torch():
    bad = [f"{rel}: imports {m}" for f, rel, src in _files() if src in NO_TORCH
           for m in _imports(f) if m == "torch" or m.startswith("torch.")]
    assert not bad, bad
