"""The bench's PNG plots (matplotlib, Agg backend), one set per workload.

Invariants: a plot with nothing to draw is not written (no empty PNG, no matplotlib legend
warning); every policy has one colour in every plot, and every series of a plot has its own
(colour, line style) pair, however many policies ran.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

# Line styles of the pinned-KV plot: a policy's pinned fraction and its KV in use share its colour.
PINNED_STYLE, IN_USE_STYLE = "-", ":"


def policy_colors(policies: list[str]) -> dict[str, tuple[float, ...]]:
    """One distinct RGBA colour per policy, in order: tab10 up to 10 policies, tab20 up to 20,
    else evenly spaced over a continuous colormap (matplotlib's default cycle repeats after 10)."""
    from matplotlib import colormaps
    n = len(policies)
    if n <= 10:
        colors = [colormaps["tab10"](i) for i in range(n)]
    elif n <= 20:
        colors = [colormaps["tab20"](i) for i in range(n)]
    else:
        colors = [colormaps["turbo"](i / (n - 1)) for i in range(n)]
    return dict(zip(policies, colors))


def make_plots(runs: list[dict[str, Any]], out: Path) -> list[Path]:
    """Write, per workload, the plots that have data; returns the paths written:
    ``<wl>_jct_cdf.png`` (JCT CDF per policy at the highest load; needs a finished program),
    ``<wl>_jct_vs_load.png`` (only with two loads or more) and ``<wl>_pinned_kv.png`` (only when
    some policy pinned KV at the highest load: targets with a KV timeline, sim and engine)."""
    import matplotlib
    matplotlib.use("Agg")

    paths = []
    for wl in sorted({r["workload"] for r in runs}):
        wr = [r for r in runs if r["workload"] == wl]
        colors = policy_colors(list(dict.fromkeys(r["policy"] for r in wr)))
        for name, fig in (("jct_cdf", jct_cdf_figure(wl, wr, colors)),
                          ("jct_vs_load", jct_vs_load_figure(wl, wr, colors)),
                          ("pinned_kv", pinned_kv_figure(wl, wr, colors))):
            if fig is not None:
                paths.append(_save(fig, out / f"{wl}_{name}.png"))
    return paths


def _top_load(wr: list[dict[str, Any]]) -> float | None:
    """The highest JPS of a workload's runs (None: the trace's own arrivals)."""
    loads = [r["jps"] for r in wr if r["jps"] is not None]
    return max(loads) if loads else None


def jct_cdf_figure(wl: str, wr: list[dict[str, Any]], colors: dict):
    """JCT CDF per policy at the highest load, or None when no program finished there."""
    import matplotlib.pyplot as plt
    import numpy as np
    top = _top_load(wr)
    shown = [r for r in wr if r["jps"] == top and r["jcts"]]
    if not shown:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in shown:
        x = np.sort(r["jcts"])
        ax.plot(x, np.arange(1, len(x) + 1) / len(x), color=colors[r["policy"]], label=r["policy"])
    at = "trace arrivals" if top is None else f"{top:g} JPS"
    ax.set(xlabel="JCT (s)", ylabel="fraction of programs", title=f"{wl}: JCT CDF at {at}")
    ax.legend(); ax.grid(alpha=.3)
    return fig


def jct_vs_load_figure(wl: str, wr: list[dict[str, Any]], colors: dict):
    """Mean JCT against load per policy, or None with fewer than two loads."""
    import matplotlib.pyplot as plt
    if len({r["jps"] for r in wr if r["jps"] is not None}) < 2:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for pol, color in colors.items():
        pts = sorted((r["jps"], r["summary"]["jct_mean"]) for r in wr
                     if r["policy"] == pol and r["jps"] is not None and r["summary"]["jct_mean"] is not None)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", color=color, label=pol)
    ax.set(xlabel="load (JPS)", ylabel="mean JCT (s)", title=f"{wl}: mean JCT vs load")
    ax.legend(); ax.grid(alpha=.3)
    return fig


def pinned_kv_figure(wl: str, wr: list[dict[str, Any]], colors: dict):
    """Pinned and in-use KV fraction over time at the highest load, or None when no policy
    pinned a block there (then the plot would say nothing about pins). Policies that never
    pinned show only their KV in use."""
    import matplotlib.pyplot as plt
    top = _top_load(wr)
    shown = [r for r in wr if r["jps"] == top and r.get("timeline")]
    if not any(p["pinned_blocks"] for r in shown for p in r["timeline"]):
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in shown:
        tl, total, color = r["timeline"], r.get("num_blocks") or 1, colors[r["policy"]]
        t = [p["t"] for p in tl]
        if any(p["pinned_blocks"] for p in tl):
            ax.plot(t, [p["pinned_blocks"] / total for p in tl], color=color, ls=PINNED_STYLE,
                    label=f"{r['policy']} pinned")
        ax.plot(t, [p["kv_usage"] for p in tl], color=color, ls=IN_USE_STYLE, alpha=.7,
                label=f"{r['policy']} KV in use")
    at = "trace arrivals" if top is None else f"{top:g} JPS"
    ax.set(xlabel="time (s)", ylabel="fraction of KV blocks", title=f"{wl}: pinned KV over time at {at}")
    ax.legend(fontsize=7); ax.grid(alpha=.3)
    return fig


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
