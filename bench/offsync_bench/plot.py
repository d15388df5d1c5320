"""The scaling plot of docs/performance.md, drawn by the harness after every run from the run
history (bench-history.jsonl: one line per run with its sizes and figures): publish seconds and
bucket-store rows against users x records, and sync-service RSS against connected devices."""

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


def publish_points(history: list[dict[str, Any]]) -> list[tuple[int, int, float, int]]:
    """(users, records, seconds, bucket rows) of every successful publish, smallest first."""
    pts = {
        (int(h["publish"]["users"]), int(h["publish"]["records"])): (
            float(h["publish"]["seconds"]),
            int(h["publish"]["bucket_ops"]),
        )
        for h in history
        if h.get("publish", {}).get("status") == "ok"
    }
    return sorted((u, r, s, b) for (u, r), (s, b) in pts.items())


def memory_curve(history: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """(devices, RSS KiB) of the largest successful connections run."""
    runs = [h["connections"] for h in history if h.get("connections", {}).get("status") == "ok"]
    if not runs:
        return []
    best = max(runs, key=lambda c: int(c["devices"]))
    return [(int(d), int(kb)) for d, kb in best["curve_devices_rss_kb"]]


def draw(history: list[dict[str, Any]], out: Path) -> bool:
    pub, mem = publish_points(history), memory_curve(history)
    if not pub and not mem:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    if pub:
        xs = [r for _, r, _, _ in pub]
        a.plot(xs, [s for _, _, s, _ in pub], "o-", color="tab:blue", label="publish seconds")
        for u, r, s, _ in pub:
            a.annotate(f"{u} users", (r, s), textcoords="offset points", xytext=(4, 4), fontsize=8)
        a.set_xlabel("records in the org")
        a.set_ylabel("publish seconds", color="tab:blue")
        a2 = a.twinx()
        a2.plot(xs, [rows for _, _, _, rows in pub], "s--", color="tab:orange", label="bucket-store rows")
        a2.set_ylabel("bucket-store rows (bucket_ops)", color="tab:orange")
        a.set_title("publish: time and bucket-store rows vs size")
    if mem:
        b.plot([d for d, _ in mem], [kb / 1024 for _, kb in mem], "o-", color="tab:green")
        b.set_xlabel("connected idle devices")
        b.set_ylabel("sync-service RSS (MiB)")
        b.set_title("memory vs connected devices (one process)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return True
