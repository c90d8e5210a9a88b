"""What a benchmark records beside its figures: the machine, the tree that produced them, and
the file it writes (command, machine and tree first, then the rows)."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def machine() -> dict:
    """CPU model, cores, memory, the torch build and threads, and the ISA flags kernels use."""
    import torch
    info = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    cpu = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                if line.startswith("model name")), platform.processor())
    mem = next((int(line.split()[1]) for line in open("/proc/meminfo")
                if line.startswith("MemTotal")), 0) if os.path.exists("/proc/meminfo") else 0
    return {"cpu": cpu, "cores": os.cpu_count(), "mem_gib": round(mem / 2**20, 1),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "avx512f": " avx512f" in info, "avx512_bf16": " avx512_bf16" in info,
            "python": platform.python_version(), "platform": platform.platform()}


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def tree(paths: tuple[str, ...] = (".", ":!benchmarks/results")) -> dict:
    """The commit, and whether ``paths`` differ from it (recorded results do not make the
    tree that produced them dirty)."""
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--", *paths))}


def write_result(path: str | Path, fields: dict) -> None:
    """Write ``{"command", "machine", "tree", **fields}`` as JSON to ``path`` and say so."""
    out = {"command": " ".join(["python"] + sys.argv), "machine": machine(), "tree": tree(), **fields}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(out, indent=1))
    print(f"\nwrote {path}")
