"""Turn fan-out results into a markdown section, the target checks and a plot."""

from __future__ import annotations

import pathlib
import platform
import time

import psutil

from bench.load import CellResult

OLD = "old design"
OLD_POOLED = "old design, pooled channel"
SEQUENTIAL = "sequential Predicts"
CLASSIFY = "Labeler Classify"
COALESCED = "Labeler Classify, coalescing"
FLOOR_FANOUT = "floor: concurrent fan-out"
FLOOR_DIRECT = "floor: one direct Predict"
DESIGNS = [OLD, OLD_POOLED, SEQUENTIAL, CLASSIFY, COALESCED, FLOOR_FANOUT, FLOOR_DIRECT]

BEGIN = "<!-- fanout-results:begin (written by python -m bench.fanout) -->"
END = "<!-- fanout-results:end -->"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = psutil.virtual_memory().total / 2**30
    return (
        f"{psutil.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def _cell(results: list[CellResult], design: str, k: int, c: int) -> CellResult | None:
    return next((r for r in results if r.design == design and r.models == k and r.concurrency == c), None)


def targets(results: list[CellResult], servers: dict[int, dict]) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met) for the issue's three targets."""
    out: list[tuple[str, str, bool | None]] = []
    ks = sorted({r.models for r in results})
    cs = sorted({r.concurrency for r in results})
    kmax, kmin, cmax = ks[-1], ks[0], cs[-1]
    paired, paired1 = servers.get(kmax, {}).get("paired_c1"), servers.get(kmin, {}).get("paired_c1")
    cls, floor = _cell(results, CLASSIFY, kmax, 1), _cell(results, FLOOR_FANOUT, kmax, 1)
    if paired and cls and floor:
        ratio = paired["classify_p50_ms"] / paired["floor_p50_ms"]
        measured = (
            f"alternating pairs: {paired['classify_p50_ms']:.2f} vs {paired['floor_p50_ms']:.2f} ms = "
            f"**{ratio:.2f}x** (separate cells: {cls.p50_ms:.2f} vs {floor.p50_ms:.2f} ms = "
            f"{cls.p50_ms / floor.p50_ms:.2f}x)"
        )
        if paired1 and kmin != kmax:
            measured += (
                f"; p50({kmax} models)/p50({kmin} model) = "
                f"{paired['classify_p50_ms'] / paired1['classify_p50_ms']:.2f} (floor: "
                f"{paired['floor_p50_ms'] / paired1['floor_p50_ms']:.2f})"
            )
        out.append(
            (f"Classify, {kmax} models, concurrency 1: p50 <= 1.3x the fan-out floor", measured, ratio <= 1.3)
        )
    k4 = 4 if 4 in ks else kmax
    old = _cell(results, OLD, k4, cmax)
    for design in (CLASSIFY, COALESCED):
        new = _cell(results, design, k4, cmax)
        if old and new:
            gain = new.rps / old.rps if old.rps else float("inf")
            out.append(
                (
                    f"{design}, {k4} models, concurrency {cmax}: >= 10x the old design's throughput",
                    f"{new.rps:.0f} vs {old.rps:.1f} req/s = **{gain:.1f}x**",
                    gain >= 10,
                )
            )
    if "labeler_rss_mb" in servers.get(kmax, {}):
        rss = servers[kmax]["labeler_rss_mb"]
        out.append(
            (
                f"Labeler resident memory with {kmax} models < 150 MB",
                f"**{rss:.0f} MB** (after the load)",
                rss < 150,
            )
        )
    return out


def markdown(results: list[CellResult], extras: dict, command: str) -> str:
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        f"Measured {when} by `{command}` on {machine()}; every cell in one run, on the same machine, "
        f"servers in their own processes. {extras.get('note', '')}".rstrip(),
        "",
    ]
    lines += [
        "| design | models | concurrency | p50 ms | p90 ms | p99 ms | req/s | requests | errors "
        "| CPU ms/request: client / Labeler / model server |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in sorted(results, key=lambda r: (DESIGNS.index(r.design), r.models, r.concurrency)):
        cpu = " / ".join(
            f"{r.cpu_ms[n]:.2f}" if n in r.cpu_ms else "-" for n in ("client", "labeler", "modelserver")
        )
        lines.append(
            f"| {r.design} | {r.models} | {r.concurrency} | {r.p50_ms:.2f} | {r.p90_ms:.2f} | "
            f"{r.p99_ms:.2f} | {r.rps:.1f} | {r.requests} | {r.errors} | {cpu} |"
        )
    lines += [
        "",
        "| K models | Labeler start-up (spawn to SERVING) | Labeler RSS after start | "
        "Labeler RSS after load | model server start-up |",
        "|--:|--:|--:|--:|--:|",
    ]
    for k, e in sorted(extras["servers"].items()):
        lines.append(
            f"| {k} | {e['labeler_start_s']:.2f} s | {e['labeler_rss_start_mb']:.0f} MB | "
            f"{e['labeler_rss_mb']:.0f} MB | {e['modelserver_start_s']:.1f} s |"
        )
    cs = sorted({r.concurrency for r in results})
    lines += [
        "",
        f"| K models | coalescing gain at concurrency {cs[-1]} (req/s off -> on) | documents per Predict "
        f"at concurrency {', '.join(map(str, cs))}, coalescing on | "
        "coalescing cost at concurrency 1 (p50 off -> on) |",
        "|--:|--:|--:|--:|",
    ]
    for k in sorted({r.models for r in results}):
        off_hi, on_hi = _cell(results, CLASSIFY, k, cs[-1]), _cell(results, COALESCED, k, cs[-1])
        off_1, on_1 = _cell(results, CLASSIFY, k, 1), _cell(results, COALESCED, k, 1)
        if off_hi and on_hi and off_1 and on_1:
            batch = " / ".join(
                f"{c.docs_per_predict:.1f}" for c in (_cell(results, COALESCED, k, x) for x in cs) if c
            )
            lines.append(
                f"| {k} | {off_hi.rps:.0f} -> {on_hi.rps:.0f} ({on_hi.rps / off_hi.rps:.2f}x) | {batch} | "
                f"{off_1.p50_ms:.2f} -> {on_1.p50_ms:.2f} ms (+{on_1.p50_ms - off_1.p50_ms:.2f} ms) |"
            )
    lines += ["", "| target | measured | met |", "|---|---|---|"]
    for name, measured, met in targets(results, extras["servers"]):
        lines.append(f"| {name} | {measured} | {'yes' if met else 'NO' if met is False else '?'} |")
    errors = [r for r in results if r.errors]
    if errors:
        lines += [
            "",
            "Errors: "
            + "; ".join(f"{r.design} K={r.models} c={r.concurrency}: {r.first_error}" for r in errors),
        ]
    return "\n".join(lines) + "\n"


def fill_block(doc: pathlib.Path, begin: str, end: str, block: str) -> None:
    """Replace what stands between the markers ``begin`` and ``end`` in ``doc``
    (a generated block of the docs) with ``block``; nothing else changes."""
    text = doc.read_text(encoding="utf-8") if doc.exists() else ""
    if begin not in text or end not in text:
        raise SystemExit(f"{doc} has no {begin} ... {end} block to fill")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    doc.write_text(f"{head}{begin}\n{block}{end}{tail}", encoding="utf-8")


def update_docs(doc: pathlib.Path, section: str) -> None:
    """Replace the generated block of docs/benchmarks.md (only that block)."""
    fill_block(doc, BEGIN, END, section)


def plot(results: list[CellResult], path: pathlib.Path) -> None:
    """p50 latency vs number of models, one line per design, at the lowest and
    highest concurrency, and throughput at the highest (log scales: the
    designs differ by 100x)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cs = sorted({r.concurrency for r in results})
    ks = sorted({r.models for r in results})
    panels = [(cs[0], "p50_ms"), (cs[-1], "p50_ms"), (cs[-1], "rps")]
    fig, axes = plt.subplots(1, len(panels), figsize=(16, 5.2))
    styles = {
        OLD: ("tab:red", "o", "-"),
        OLD_POOLED: ("tab:orange", "o", "--"),
        SEQUENTIAL: ("tab:purple", "s", "-"),
        CLASSIFY: ("tab:blue", "D", "-"),
        COALESCED: ("tab:cyan", "D", "--"),
        FLOOR_FANOUT: ("black", "^", ":"),
        FLOOR_DIRECT: ("gray", "v", ":"),
    }
    for ax, (c, metric) in zip(axes, panels, strict=False):
        for design in DESIGNS:
            cells = sorted(
                (r for r in results if r.design == design and r.concurrency == c), key=lambda r: r.models
            )
            if cells:
                color, marker, line = styles[design]
                ax.plot(
                    [r.models for r in cells],
                    [getattr(r, metric) for r in cells],
                    label=design,
                    color=color,
                    marker=marker,
                    linestyle=line,
                )
        ax.set_xscale("log", base=2)
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.set_yscale("log")
        ax.set_xlabel("label models per request (K)")
        ax.set_ylabel("p50 latency (ms)" if metric == "p50_ms" else "requests per second")
        ax.set_title(f"{'p50 latency' if metric == 'p50_ms' else 'throughput'}, concurrency {c}")
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=9, frameon=False)
    fig.suptitle(
        "Labeling one document with K models, by design "
        "(log scales; lower latency and higher throughput are better)"
    )
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)
