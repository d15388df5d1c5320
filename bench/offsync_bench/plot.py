"""The cost curves of docs/performance.md, drawn by the harness after every run from the run
history (bench-history.jsonl: one line per run with its sizes and figures): publish seconds
against users (publish and publish_20k), fanout p99 against connected devices (fanout and
fanout_10k), and sync-service memory per device against devices (connections and the fanouts)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson


def append_history(path: Path, doc: dict[str, Any]) -> None:
    keep: dict[str, Any] = {k: doc[k] for k in ("generated_at", "commit", "quick", "sizes") if k in doc}
    keep.update({k: v for k, v in doc.items() if isinstance(v, dict) and v.get("status") in ("ok", "failed")})
    with path.open("ab") as f:
        f.write(orjson.dumps(keep) + b"\n")


def load_history(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def _ok(h: dict[str, Any], name: str) -> dict[str, Any] | None:
    w = h.get(name)
    return w if isinstance(w, dict) and w.get("status") == "ok" else None


def publish_points(history: list[dict[str, Any]]) -> list[tuple[int, int, float]]:
    """(users, records, seconds) of every successful publish and publish_20k, fewest users first;
    the latest run of a size wins."""
    pts: dict[tuple[int, int], float] = {}
    for h in history:
        for name in ("publish", "publish_20k"):
            w = _ok(h, name)
            if w is not None:
                pts[(int(w["users"]), int(w["records"]))] = float(w["seconds"])
    return sorted((u, r, s) for (u, r), s in pts.items())


def fanout_points(history: list[dict[str, Any]]) -> list[tuple[int, float]]:
    """(devices, p99 ms) of every successful fanout and fanout_10k, fewest devices first."""
    pts: dict[int, float] = {}
    for h in history:
        for name in ("fanout", "fanout_10k"):
            w = _ok(h, name)
            if w is not None and "p99_ms" in w:
                pts[int(w["devices"])] = float(w["p99_ms"])
    return sorted(pts.items())


def memory_per_device(history: list[dict[str, Any]]) -> list[tuple[int, float]]:
    """(devices, sync-service KiB per device above its RSS before the devices came): the largest
    connections run's curve (idle devices) and every fanout run's (devices receiving changes),
    fewest devices first."""
    pts: dict[int, float] = {}
    runs = [w for h in history if (w := _ok(h, "connections")) is not None]
    if runs:
        best = max(runs, key=lambda c: int(c["devices"]))
        curve = best["curve_devices_rss_kb"]
        base = int(curve[0][1])  # the fresh process before the first device
        pts.update({int(d): (int(kb) - base) / int(d) for d, kb in curve if int(d) > 0})
    for h in history:
        for name in ("fanout", "fanout_10k"):
            w = _ok(h, name)
            if w is not None and "rss_kb_per_device" in w:
                pts[int(w["devices"])] = float(w["rss_kb_per_device"])
    return sorted(pts.items())


def draw(history: list[dict[str, Any]], out: Path) -> bool:
    pub, fan, mem = publish_points(history), fanout_points(history), memory_per_device(history)
    if not pub and not fan and not mem:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b, c) = plt.subplots(1, 3, figsize=(15, 4.2))
    if pub:
        a.plot([u for u, _, _ in pub], [s for _, _, s in pub], "o-", color="tab:blue")
        for u, r, s in pub:
            a.annotate(f"{r / 1e6:.2g}M records", (u, s), textcoords="offset points", xytext=(4, 4), fontsize=8)
        a.set_xlabel("users")
        a.set_ylabel("publish seconds")
        a.set_title("publish time vs users")
    if fan:
        b.plot([d for d, _ in fan], [p for _, p in fan], "o-", color="tab:red")
        b.set_xlabel("connected devices (same per-device rate)")
        b.set_ylabel("fanout p99 (ms)")
        b.set_title("fanout p99 vs devices")
    if mem:
        c.plot([d for d, _ in mem], [kb for _, kb in mem], "o-", color="tab:green")
        c.set_xlabel("connected devices")
        c.set_ylabel("sync-service RSS per device (KiB)")
        c.set_title("memory per device vs devices")
    for ax in (a, b, c):
        ax.set_xscale("log")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return True
