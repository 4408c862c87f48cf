"""Render a :class:`~portllm_edge.reports.model.Report` as Markdown, JSON and PNG charts.

Why this module exists: the same report goes to a terminal user, a spreadsheet and a
slide. Rendering is pure (report in, text/bytes out); only :func:`write_report`
touches the file system, one atomic write per file, so an interrupted run never leaves
a half-written chart next to a complete Markdown file.

Charts use matplotlib's object API with the Agg canvas (``Figure`` +
``FigureCanvasAgg``), never ``pyplot``: no global state, no display, thread-safe.
matplotlib is imported lazily. It must not import torch.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from portllm_edge.errors import ConfigError
from portllm_edge.hardware.sizes import format_size
from portllm_edge.reports.model import (
    BREAKDOWN_KEYS,
    AccuracyRow,
    Report,
    accuracy_series,
    memory_labels,
)

CHART_ACCURACY = "accuracy.png"
CHART_MEMORY = "memory_breakdown.png"
CHART_ESTIMATES = "estimate_vs_measured.png"
CHART_BUDGET = "memory_budget.png"
CHART_HEALTH = "patch_health.png"
MARKDOWN_NAME = "report.md"
JSON_NAME = "report.json"

_COLORS = {
    "weights": "#4C72B0",
    "adapter": "#DD8452",
    "optimizer": "#C44E52",
    "activations": "#55A868",
    "other": "#8C8C8C",
}


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x + 0.0:.1f}%"  # + 0.0: no "-0.0%"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(report: Report, charts: Sequence[str] = ()) -> str:
    """The report as GitHub-flavoured Markdown.

    Args:
        report: The report.
        charts: File names of the charts written beside it (embedded as images).

    Returns:
        Markdown text ending with a newline.
    """
    out: list[str] = [f"# {report.title}", "", f"Generated {report.generated_at}.", ""]
    if report.accuracy:
        out += _accuracy_section(report, charts)
    out += _health_markdown(report, charts)
    if report.memory:
        out += _memory_section(report, charts)
    if report.ratios:
        out += ["## Memory ratio", ""]
        for r in report.ratios:
            metric = f" (metric: {r.metric})" if r.metric else ""
            out.append(f"- **{_md_escape(r.label)}: {r.value:.2f}×**{metric} — run {r.run_id}")
        out.append("")
    if report.budget:
        out += _budget_section(report, charts)
    if not (report.accuracy or report.memory or report.ratios or report.budget or report.health):
        out += ["No accuracy or memory results in the selected runs.", ""]
    out += ["## Runs", "", "| id | kind | status | started | summary |", "|---|---|---|---|---|"]
    for s in report.runs:
        out.append(f"| {s.id} | {s.kind} | {s.status} | {s.started_at} | {_md_escape(s.description)} |")
    out.append("")
    if report.notes:
        out += ["## Notes", ""] + [f"- {_md_escape(n)}" for n in report.notes] + [""]
    return "\n".join(out)


def _accuracy_section(report: Report, charts: Sequence[str]) -> list[str]:
    """``## Accuracy``: one table per task, then the gain kept by each port and its paired lines."""
    out = ["## Accuracy", ""]
    tasks: dict[str, list[Any]] = {}
    for row in report.accuracy:
        tasks.setdefault(row.task, []).append(row)
    for task, rows in tasks.items():
        has_f1 = any(r.f1 is not None for r in rows)
        out += [f"### {task}", ""]
        head = "| configuration | accuracy | 95% CI | n |" + (" F1 |" if has_f1 else "") + " run |"
        out += [head, "|" + "---|" * (head.count("|") - 1)]
        for r in rows:
            ci = f"{_pct(r.ci_low)} – {_pct(r.ci_high)}" if r.ci_low is not None else "n/a"
            f1 = f" {_pct(r.f1)} |" if has_f1 else ""
            n = str(r.n) if r.n is not None else "n/a"
            out.append(f"| {_md_escape(r.config)} | {_pct(r.accuracy)} | {ci} | {n} |{f1} {r.run_id or ''} |")
        out.append("")
    for g in report.gains:
        ci = (
            f" (95% paired bootstrap CI {_pct(g.ci_low)} – {_pct(g.ci_high)})" if g.ci_low is not None else ""
        )
        out.append(
            f"- {g.task}: the port keeps **{_pct(g.value)}**{ci} of the patch's gain over zero-shot "
            f"((ported − zero-shot) / (old base + patch − zero-shot); run {g.run_id})"
        )
        out.extend(f"  - {_md_escape(line)}" for line in g.paired)
    if report.gains:
        out.append("")
    if CHART_ACCURACY in charts:
        out += [f"![Accuracy per configuration]({CHART_ACCURACY})", ""]
    return out


def _memory_section(report: Report, charts: Sequence[str]) -> list[str]:
    """``## Peak memory per phase``: measured peak, spread, breakdown and planner estimate per phase."""
    out = ["## Peak memory per phase", ""]
    out += [
        "| phase | metric | measured peak | spread | " + " | ".join(BREAKDOWN_KEYS) + " | breakdown from "
        "| planner estimate | estimate / measured | wall time |"
    ]
    out.append("|" + "---|" * (len(BREAKDOWN_KEYS) + 8))
    for p, label in zip(report.memory, memory_labels(report.memory), strict=True):
        parts = [format_size(p.breakdown[k]) if p.breakdown else "n/a" for k in BREAKDOWN_KEYS]
        ratio = f"{p.estimate_ratio:.2f}" if p.estimate_ratio is not None else "n/a"
        wall = f"{p.wall_seconds:.1f} s" if p.wall_seconds is not None else "n/a"
        out.append(
            f"| {_md_escape(label)} | {p.metric or 'n/a'} | {format_size(p.peak_bytes)} | "
            f"{format_size(p.spread_bytes) if p.spread_bytes is not None else 'n/a'} | "
            + " | ".join(parts)
            + f" | {p.breakdown_source or 'n/a'} | {format_size(p.estimate_bytes)} | {ratio} | {wall} |"
        )
    out.append("")
    for chart, alt in (
        (CHART_MEMORY, "Memory breakdown per phase"),
        (CHART_ESTIMATES, "Planner estimate beside measured peak"),
    ):
        if chart in charts:
            out += [f"![{alt}]({chart})", ""]
    return out


def _budget_section(report: Report, charts: Sequence[str]) -> list[str]:
    """``## Memory budget``: per hardware profile, fits/headroom per precision and fine-tuning fits."""
    precs = [c.precision for c in report.budget[0].cells]
    model = f" for `{report.budget_model}`" if report.budget_model else ""
    out = [
        f"## Memory budget{model}",
        "",
        "Planner estimates of the inference peak against each hardware profile's usable memory "
        "(after reserved memory and headroom). Each cell: fits? and the headroom left (negative: short by).",
        "",
    ]
    ft_labels = list(report.budget[0].finetune_fits)
    out.append(
        "| hardware | memory | usable | " + " | ".join(precs) + " | best | " + " | ".join(ft_labels) + " |"
    )
    out.append("|" + "---|" * (4 + len(precs) + len(ft_labels)))
    for b in report.budget:
        cells = [f"{'✓' if c.fits else '✗'} {format_size(c.headroom_bytes)}" for c in b.cells]
        ft = ["✓" if b.finetune_fits.get(k) else "✗" for k in ft_labels]
        out.append(
            f"| {_md_escape(b.display_name)} | {format_size(b.total_bytes)} | {format_size(b.usable_bytes)} | "
            + " | ".join(cells)
            + f" | {b.best or 'none'} | "
            + " | ".join(ft)
            + " |"
        )
    out.append("")
    if CHART_BUDGET in charts:
        out += [f"![Memory budget]({CHART_BUDGET})", ""]
    return out


def _health_markdown(report: Report, charts: Sequence[str]) -> list[str]:
    """The patch-health section: recovered gain per version of each lineage, with paired intervals."""
    if not report.health:
        return []
    out = [
        "## Patch health across successive updates",
        "",
        "Recovered gain (ported − zero-shot) / (old base + patch − zero-shot) of each port of a patch onto "
        "the versions of one update chain, with 95% paired bootstrap intervals.",
        "",
    ]
    for h in report.health:
        out += [
            f"### {_md_escape(h.label)}",
            "",
            "| version | recovered gain | 95% CI | patch gain over zero-shot | n | run |",
            "|---|---|---|---|---|---|",
        ]
        for p in h.points:
            ci = f"{_pct(p.low)} – {_pct(p.high)}" if p.low is not None and p.high is not None else "n/a"
            gain = "n/a" if p.gain is None else f"{100 * p.gain:+.1f} points"
            if p.gain is not None and p.gain <= 0:
                gain += " (≤ 0: the ratio means little)"
            out.append(
                f"| {p.version} | {_pct(p.recovered_gain)} | {ci} | {gain} | {p.n or 'n/a'} | {p.run_id} |"
            )
        out.append("")
    if CHART_HEALTH in charts:
        out += [f"![Patch health per version]({CHART_HEALTH})", ""]
    return out


def chart_health(report: Report) -> bytes | None:
    """Recovered gain per version of each (patch, lineage, task), with 95 % paired bootstrap whiskers (PNG)."""
    if not report.health:
        return None
    versions: list[str] = []
    for h in report.health:
        for p in h.points:
            if p.version not in versions:
                versions.append(p.version)
    versions.sort(key=lambda v: int(v[1:]) if v[1:].isdigit() else 0)
    fig = _figure(max(6.0, 0.8 * len(versions) + 3), 4.2)
    ax = fig.add_subplot(1, 1, 1)
    step = 0.6 / max(1, len(report.health))
    for j, h in enumerate(report.health):
        xs = [versions.index(p.version) - 0.3 + step * (j + 0.5) for p in h.points]
        (line,) = ax.plot(xs, [100 * p.recovered_gain for p in h.points], marker="o", label=h.label)
        # each interval as recorded: a ratio's percentile interval may lie wholly above or below its estimate
        for x, p in zip(xs, h.points, strict=True):
            if p.low is not None and p.high is not None:
                ax.plot([x, x], [100 * p.low, 100 * p.high], color=line.get_color(), marker="_", lw=1)
    ax.axhline(100, color="#555555", lw=0.8, ls="--")
    ax.axhline(0, color="#555555", lw=0.8)
    low, high = ax.get_ylim()
    if low < -50 or high > 200:  # a patch with a near-zero gain has huge whiskers: keep the rest readable
        ax.set_ylim(max(low, -50), min(high, 200))
        ax.text(0.01, 0.01, "axis clipped to -50%..200%; see the table for full intervals", transform=ax.transAxes,
                fontsize=7, color="#555555")  # fmt: skip
    ax.set_xticks(range(len(versions)), versions)
    ax.set_xlabel("base version (each an update of the previous one)")
    ax.set_ylabel("recovered gain (%)")
    ax.set_title("Patch health: share of the patch's gain kept by the port (95% paired bootstrap CI)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def render_json(report: Report) -> str:
    """The report as indented JSON (bytes as integers, fractions in [0, 1])."""
    return json.dumps(report.to_dict(), indent=2, sort_keys=True) + "\n"


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def _gib(x: float) -> float:
    return x / 1024**3


def chart_accuracy(report: Report) -> bytes | None:
    """Grouped bars: accuracy per configuration for each task, with 95 % CI whiskers (PNG)."""
    if not report.accuracy:
        return None
    tasks: list[str] = []
    configs: list[str] = []
    bars: dict[tuple[str, str], AccuracyRow] = {}
    for r, series in zip(report.accuracy, accuracy_series(report.accuracy), strict=True):
        if r.task not in tasks:
            tasks.append(r.task)
        if series not in configs:
            configs.append(series)
        bars[(r.task, series)] = r
    fig = _figure(max(6.0, 1.6 * len(tasks) * max(1, len(configs)) ** 0.5 + 3), 4.2)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / len(configs)
    for j, config in enumerate(configs):
        xs, ys, lo, hi = [], [], [], []
        for i, task in enumerate(tasks):
            row = bars.get((task, config))
            if row is None:
                continue
            xs.append(i - 0.4 + width * (j + 0.5))
            ys.append(100 * row.accuracy)
            # half-widths clamped at 0: a stored interval may miss its estimate by rounding
            # (ci_high 0.9999999999999999 at 100 %) and matplotlib refuses a negative error bar
            lo.append(max(0.0, 100 * (row.accuracy - row.ci_low)) if row.ci_low is not None else 0.0)
            hi.append(max(0.0, 100 * (row.ci_high - row.accuracy)) if row.ci_high is not None else 0.0)
        drawn = ax.bar(xs, ys, width * 0.95, yerr=[lo, hi], capsize=3, label=config)
        ax.bar_label(drawn, labels=[f"{y:.1f}" for y in ys], fontsize=7, padding=2)
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_title("Accuracy per configuration (95% Wilson CI)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def chart_memory(report: Report) -> bytes | None:
    """Per job, side by side: the planner's estimate split by category, and the measured peak (GiB, PNG).

    Every bar is a measurement made in an isolated worker process (:class:`MemoryPhase`); the
    estimate bar is stacked by weights/adapter/optimizer/activations/other when the run has
    the planner's terms, else one plain bar; a job without an estimate shows its measured bar only.
    """
    if not report.memory:
        return None
    phases = list(report.memory)
    fig = _figure(max(6.5, 1.6 * len(phases) + 3), 4.4)
    ax = fig.add_subplot(1, 1, 1)
    xs = list(range(len(phases)))
    w = 0.38
    est_x = [x - w / 2 for x in xs]
    bottom = [0.0] * len(phases)
    for key in BREAKDOWN_KEYS:
        vals = [
            _gib(p.breakdown[key]) if p.breakdown and p.breakdown_source == "estimated" else 0.0
            for p in phases
        ]
        if any(vals):
            ax.bar(est_x, vals, w, bottom=bottom, label=f"estimate: {key}", color=_COLORS[key])
            bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    plain_est = [
        _gib(p.estimate_bytes) if p.estimate_bytes is not None and p.breakdown_source != "estimated" else 0.0
        for p in phases
    ]
    if any(plain_est):
        ax.bar(est_x, plain_est, w, label="estimate (total)", color="#937860")
    for x, p in zip(est_x, phases, strict=True):
        if p.estimate_bytes is not None:
            ax.annotate(
                f"{_gib(p.estimate_bytes):.2f}",
                (x, _gib(p.estimate_bytes)),
                textcoords="offset points",
                xytext=(0, 3),
                ha="center",
                fontsize=7,
            )
    meas = ax.bar(
        [x + w / 2 for x in xs],
        [_gib(p.peak_bytes) for p in phases],
        w,
        label="measured peak (isolated worker)",
        color="#222222",
    )
    ax.bar_label(meas, labels=[f"{_gib(p.peak_bytes):.2f}" for p in phases], fontsize=7, padding=2)
    ax.set_xticks(xs, memory_labels(phases), rotation=15, ha="right", fontsize=8)
    ax.set_ylabel("GiB")
    metrics = sorted({p.metric for p in phases if p.metric})
    ax.set_title(
        "Peak memory per job: planner estimate (left, by category) vs measured (right)\n"
        f"measured in a worker process of its own; metric: {', '.join(metrics) or 'n/a'}",
        fontsize=9,
    )
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.grid(axis="y", alpha=0.3)
    ax.set_ylim(0, max(max(bottom), max(plain_est), max(_gib(p.peak_bytes) for p in phases)) * 1.15)
    return _png(fig)


def chart_estimates(report: Report) -> bytes | None:
    """Side-by-side bars: planner estimate and measured peak, for phases that have both (GiB, PNG)."""
    pairs = [
        (p, label)
        for p, label in zip(report.memory, memory_labels(report.memory), strict=True)
        if p.estimate_bytes is not None
    ]
    if not pairs:
        return None
    both, labels = [p for p, _ in pairs], [label for _, label in pairs]
    fig = _figure(max(6.0, 1.3 * len(both) + 3), 4.0)
    ax = fig.add_subplot(1, 1, 1)
    xs = list(range(len(both)))
    est = ax.bar(
        [x - 0.2 for x in xs],
        [_gib(p.estimate_bytes or 0) for p in both],
        0.4,
        label="planner estimate",
        color="#937860",
    )
    meas = ax.bar(
        [x + 0.2 for x in xs], [_gib(p.peak_bytes) for p in both], 0.4, label="measured peak", color="#4C72B0"
    )
    ax.bar_label(est, fmt="%.2f", fontsize=7, padding=2)
    ax.bar_label(meas, fmt="%.2f", fontsize=7, padding=2)
    ax.set_xticks(xs, labels, rotation=15, ha="right", fontsize=8)
    ax.set_ylabel("GiB")
    ax.set_title(
        "Planner estimate vs measured peak\n(each measured in a worker process of its own)", fontsize=10
    )
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def chart_budget(report: Report) -> bytes | None:
    """Per device: its usable memory and each precision's inference estimate, on a log scale (GiB, PNG).

    A log axis, so that a 135M model's four precisions (hundreds of MiB) are told apart on
    the same chart as a 72 GiB card. This machine's row (when the report has one) comes first,
    in bold; a marker left of its row's line fits, right of it does not.
    """
    if not report.budget:
        return None
    rows = list(report.budget)
    fig = _figure(8.5, max(3.2, 0.42 * len(rows) + 1.8))
    ax = fig.add_subplot(1, 1, 1)
    ys = list(range(len(rows)))[::-1]  # first row on top
    usable = [_gib(b.usable_bytes) for b in rows]
    precs = [c.precision for c in rows[0].cells]
    needed = [_gib(c.needed_bytes) for b in rows for c in b.cells]
    low = min([*needed, *usable]) / 2
    ax.hlines(ys, [low] * len(rows), usable, colors="#CCCCCC", linewidth=7, label="usable memory", zorder=1)
    ax.scatter(usable, ys, marker="|", s=200, color="#555555", zorder=2)
    markers = ["o", "s", "^", "D", "v", "P"]
    for k, prec in enumerate(precs):
        vals = []
        for b in rows:
            cell = next((c for c in b.cells if c.precision == prec), None)
            vals.append(_gib(cell.needed_bytes) if cell else float("nan"))
        ax.scatter(vals, ys, marker=markers[k % len(markers)], label=f"{prec} estimate", zorder=3, s=28)
    ax.set_xscale("log")
    ax.set_xlim(low, max([*needed, *usable]) * 1.6)
    ax.set_yticks(ys, [b.display_name for b in rows], fontsize=7)
    for tick, b in zip(ax.get_yticklabels(), rows, strict=True):
        if b.this_machine:
            tick.set_fontweight("bold")
            tick.set_color("#C44E52")
    ax.set_xlabel("GiB (log scale)")
    ax.xaxis.set_major_formatter(_gib_formatter())
    title = "Inference estimate per precision vs usable memory (fits: marker left of the bar's end)"
    ax.set_title(title + (f"\n{report.budget_model}" if report.budget_model else ""), fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(axis="x", which="both", alpha=0.25)
    return _png(fig)


def _gib_formatter() -> Any:
    """Tick labels for a log GiB axis: ``0.25``, ``1``, ``16`` (no ``10^-1``)."""
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda v, _pos: f"{v:g}")


def render_charts(report: Report) -> dict[str, bytes]:
    """All charts the report has data for: file name -> PNG bytes."""
    out: dict[str, bytes] = {}
    for name, fn in (
        (CHART_ACCURACY, chart_accuracy),
        (CHART_MEMORY, chart_memory),
        (CHART_ESTIMATES, chart_estimates),
        (CHART_BUDGET, chart_budget),
        (CHART_HEALTH, chart_health),
    ):
        png = fn(report)
        if png is not None:
            out[name] = png
    return out


def write_report(report: Report, out_dir: str | Path) -> list[Path]:
    """Write ``report.md``, ``report.json`` and the PNG charts into ``out_dir``.

    All files are rendered first; a new ``out_dir`` is built in a temporary sibling and renamed
    (:func:`~portllm_edge.fsutil.atomic_dir`), into an existing one each file is written atomically.

    Returns:
        The written paths: Markdown, JSON, then charts.

    Raises:
        ConfigError: ``out_dir`` is a file, or can't be created or written
            (:func:`~portllm_edge.fsutil.unwritable_reason`).
    """
    from portllm_edge.fsutil import (
        atomic_dir,
        atomic_write_bytes,
        atomic_write_text,
        empty_path_reason,
        unwritable_reason,
    )

    empty = empty_path_reason(out_dir)
    if empty is not None:
        raise ConfigError(
            f"report folder {str(out_dir)!r}: {empty}", hint="pass --out a folder, e.g. --out report"
        )
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(
            f"{out}: is a file, not a report folder", hint="pass --out a folder path (created if missing)"
        )
    reason = unwritable_reason(out / MARKDOWN_NAME)  # the files it writes: a folder holding the store is fine
    if reason is not None:
        raise ConfigError(f"{out}: {reason}", hint="pass --out a folder you can write to")
    # everything is rendered before anything is written: a rendering error leaves no folder behind
    charts = render_charts(report)
    texts = {JSON_NAME: render_json(report), MARKDOWN_NAME: render_markdown(report, list(charts))}
    if out.exists():  # an existing folder may hold other files: replace only ours, each atomically
        for name, png in charts.items():
            atomic_write_bytes(out / name, png)
        for name, text in texts.items():
            atomic_write_text(out / name, text)
    else:  # a new folder appears complete or not at all (built in a temporary sibling, renamed)
        with atomic_dir(out) as tmp:
            for name, png in charts.items():
                (tmp / name).write_bytes(png)
            for name, text in texts.items():
                (tmp / name).write_text(text, encoding="utf-8")
    return [out / MARKDOWN_NAME, out / JSON_NAME, *(out / name for name in charts)]
