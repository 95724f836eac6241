"""A rehearsal as one self-contained page: a timeline to look at, and the summary table.

Inline SVG and CSS only: no script, no font, no image, nothing fetched, so the file
opens the same on a laptop offline, in a CI artifact viewer or attached to a ticket.
Each drawn event carries data-* attributes (time, worker, version) so tools and tests
can read the picture back.
"""

from __future__ import annotations

import math
from html import escape

from .report import CallSpan, RehearsalReport, WorkerSpan

WIDTH = 1100
LEFT = 150
RIGHT = 70
CHART_TOP = 40
CHART_H = 220
LANE_H = 26
PALETTE = ("#2563eb", "#16a34a", "#9333ea", "#ea580c")
CUT = "#dc2626"


def live_counts(calls: list[CallSpan], version: str, until: float) -> list[tuple[float, int]]:
    """(time, calls live on `version` from then on), one point per change, from 0."""
    changes: list[tuple[float, int]] = []
    for c in calls:
        if c.version != version or c.start is None:
            continue
        changes.append((c.start, 1))
        changes.append((c.end if c.end is not None else until, -1))
    changes.sort(key=lambda tc: (tc[0], tc[1]))
    points = [(0.0, 0)]
    live = 0
    for t, delta in changes:
        live += delta
        if points[-1][0] == t:
            points[-1] = (t, live)
        else:
            points.append((t, live))
    return points


def _at(points: list[tuple[float, int]], t: float) -> int:
    value = 0
    for pt, n in points:
        if pt > t:
            break
        value = n
    return value


def _ticks(end: float) -> list[float]:
    raw = end / 8 if end > 0 else 1.0
    step = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if raw <= step * factor:
            step *= factor
            break
    return [i * step for i in range(int(end / step) + 1)]


class _Canvas:
    def __init__(self, end: float) -> None:
        self.end = max(end, 1.0)
        self.parts: list[str] = []

    def x(self, t: float) -> float:
        return round(LEFT + (WIDTH - LEFT - RIGHT) * min(max(t, 0.0), self.end) / self.end, 1)

    def add(self, svg: str) -> None:
        self.parts.append(svg)


def _colors(report: RehearsalReport) -> dict[str, str]:
    versions = [report.from_version, report.to_version]
    versions += sorted({c.version for c in report.calls if c.version} - set(versions))
    return {v: PALETTE[i % len(PALETTE)] for i, v in enumerate(versions)}


def timeline_svg(report: RehearsalReport) -> str:
    """The deploy over time: live calls by version, manifest changes, workers' lives."""
    end = max(
        [report.duration_seconds]
        + [c.end or 0 for c in report.calls]
        + [w.exited or 0 for w in report.workers]
    )
    cv = _Canvas(end)
    colors = _colors(report)
    workers = sorted(report.workers, key=lambda w: (w.role != "old", w.started, w.name))
    lanes_top = CHART_TOP + CHART_H + 60
    height = lanes_top + LANE_H * len(workers) + 50

    series = {v: live_counts(report.calls, v, cv.end) for v in colors}
    stamps = sorted({t for pts in series.values() for t, _ in pts} | {cv.end})
    peak = max([1] + [sum(_at(pts, t) for pts in series.values()) for t in stamps])
    scale = CHART_H / (peak * 1.1)

    def y(n: float) -> float:
        return round(CHART_TOP + CHART_H - n * scale, 1)

    # axes and grid
    for t in _ticks(cv.end):
        x = cv.x(t)
        cv.add(
            f'<line x1="{x}" y1="{CHART_TOP}" x2="{x}" y2="{lanes_top + LANE_H * len(workers)}"'
            ' class="grid"/>'
        )
        cv.add(f'<text x="{x}" y="{height - 30}" class="tick" text-anchor="middle">{t:g}s</text>')
    for n in range(0, peak + 1, max(1, math.ceil(peak / 5))):
        cv.add(f'<text x="{LEFT - 8}" y="{y(n) + 4}" class="tick" text-anchor="end">{n}</text>')
        cv.add(f'<line x1="{LEFT}" y1="{y(n)}" x2="{WIDTH - RIGHT}" y2="{y(n)}" class="grid"/>')
    cv.add(
        f'<text x="{LEFT - 8}" y="{CHART_TOP - 14}" class="label" text-anchor="end">'
        "live calls</text>"
    )

    # live calls per version, stacked in version order
    below = [0] * len(stamps)
    for version, pts in series.items():
        counts = [_at(pts, t) for t in stamps]
        if not any(counts):
            continue
        top = [b + n for b, n in zip(below, counts, strict=True)]
        upper = []
        for i, t in enumerate(stamps):
            if i:
                upper.append(f"{cv.x(t)},{y(top[i - 1])}")
            upper.append(f"{cv.x(t)},{y(top[i])}")
        lower = []
        for i in range(len(stamps) - 1, -1, -1):
            lower.append(f"{cv.x(stamps[i])},{y(below[i])}")
            if i:
                lower.append(f"{cv.x(stamps[i])},{y(below[i - 1])}")
        cv.add(
            f'<polygon class="live-calls" data-version="{escape(version)}" '
            f'data-peak="{max(counts)}" fill="{colors[version]}" fill-opacity="0.55" '
            f'stroke="{colors[version]}" points="{" ".join(upper + lower)}">'
            f"<title>{escape(version)}: up to {max(counts)} live calls</title></polygon>"
        )
        below = top

    # manifest changes and the cutover
    for i, m in enumerate(report.manifests):
        x = cv.x(m.t)
        active = ", ".join(m.active)
        cv.add(
            f'<g class="manifest" data-t="{m.t}" data-active="{escape(",".join(m.active))}">'
            f'<line x1="{x}" y1="{CHART_TOP - 6}" x2="{x}" y2="{lanes_top - 20}" class="mark"/>'
            f'<text x="{x + 3}" y="{CHART_TOP - 6 + 12 * (i % 2)}" class="note">'
            f"manifest: {escape(active)}</text><title>t={m.t:.2f}s manifest published, "
            f"active {escape(active)}</title></g>"
        )
    if report.cutover_at is not None:
        x = cv.x(report.cutover_at)
        cv.add(
            f'<g class="cutover" data-t="{report.cutover_at}"><line x1="{x}" y1="{CHART_TOP}" '
            f'x2="{x}" y2="{CHART_TOP + CHART_H}" class="cutover-line"/><text x="{x + 3}" '
            f'y="{CHART_TOP + CHART_H - 6}" class="note">cutover</text></g>'
        )

    # one lane per worker: alive from start to exit, SIGTERM and exit marked
    cv.add(
        f'<text x="{LEFT - 8}" y="{lanes_top - 14}" class="label" text-anchor="end">workers</text>'
    )
    for i, w in enumerate(workers):
        _lane(cv, w, lanes_top + i * LANE_H, colors.get(w.version, "#6b7280"))

    legend = "".join(
        f'<rect x="{LEFT + i * 120}" y="{height - 18}" width="12" height="12" fill="{c}"/>'
        f'<text x="{LEFT + i * 120 + 18}" y="{height - 8}" class="tick">{escape(v)}</text>'
        for i, (v, c) in enumerate(colors.items())
    )
    keys = LEFT + len(colors) * 120 + 20
    legend += (
        f'<path d="M{keys},{height - 17} L{keys + 10},{height - 17} L{keys + 5},{height - 9} Z"'
        f' fill="{CUT}"/><text x="{keys + 16}" y="{height - 8}" class="tick">SIGTERM</text>'
        f'<circle cx="{keys + 95}" cy="{height - 12}" r="5" fill="#111827"/>'
        f'<text x="{keys + 104}" y="{height - 8}" class="tick">exit (code)</text>'
        f'<line x1="{keys + 190}" y1="{height - 12}" x2="{keys + 215}" y2="{height - 12}" '
        f'class="mark"/><text x="{keys + 221}" y="{height - 8}" class="tick">'
        "manifest published</text>"
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" '
        f'width="{WIDTH}" height="{height}" role="img" aria-label="deploy timeline">'
        f"{''.join(cv.parts)}{legend}</svg>"
    )


def _lane(cv: _Canvas, w: WorkerSpan, top: float, color: str) -> None:
    mid = top + LANE_H / 2
    end = w.exited if w.exited is not None else cv.end
    name = escape(w.name)
    cv.add(
        f'<g class="worker" data-worker="{name}" data-version="{escape(w.version)}" '
        f'data-role="{w.role}" data-started="{w.started}">'
        f'<text x="{LEFT - 8}" y="{mid + 4}" class="tick" text-anchor="end">{name}</text>'
        f'<rect x="{cv.x(w.started)}" y="{top + 5}" width="{max(1.0, cv.x(end) - cv.x(w.started))}"'
        f' height="{LANE_H - 10}" rx="3" fill="{color}" fill-opacity="0.35"/>'
    )
    if w.sigterm is not None:
        x = cv.x(w.sigterm)
        cv.add(
            f'<g class="sigterm" data-worker="{name}" data-t="{w.sigterm}">'
            f'<path d="M{x - 5},{top + 1} L{x + 5},{top + 1} L{x},{top + 9} Z" fill="{CUT}"/>'
            f'<line x1="{x}" y1="{top + 5}" x2="{x}" y2="{top + LANE_H - 5}" stroke="{CUT}"/>'
            f"<title>{name}: SIGTERM at {w.sigterm:.2f}s</title></g>"
        )
    if w.exited is not None:
        x = cv.x(w.exited)
        drained = "" if w.sigterm is None else f", {w.exited - w.sigterm:.2f}s after SIGTERM"
        cv.add(
            f'<g class="exit" data-worker="{name}" data-t="{w.exited}" data-code="{w.exit_code}">'
            f'<circle cx="{x}" cy="{mid}" r="5" fill="{"#111827" if w.exit_code == 0 else CUT}"/>'
            f'<text x="{x + 8}" y="{mid + 4}" class="note">exit {w.exit_code}</text>'
            f"<title>{name}: exited with {w.exit_code} at {w.exited:.2f}s{drained}</title></g>"
        )
    cv.add("</g>")


def _summary_rows(report: RehearsalReport) -> list[tuple[str, str]]:
    by_version = ", ".join(f"{v}: {n}" for v, n in sorted(report.calls_by_version.items()))
    rows = [
        ("verdict", "PASS" if report.ok else "FAIL"),
        ("calls placed", str(report.calls_placed)),
        ("completed", str(report.calls_completed)),
        ("failed / cancelled", f"{report.calls_failed} / {report.calls_cancelled}"),
        ("dropped / unserved", f"{report.calls_dropped} / {report.calls_unserved}"),
        ("calls by version", by_version or "none"),
        (
            f"accepted on {report.from_version} after cutover",
            str(report.post_cutover_calls_on_old),
        ),
        ("cutover at", "n/a" if report.cutover_at is None else f"{report.cutover_at:.2f}s"),
        (
            "audit chain",
            f"{'whole' if report.audit_chain_ok else 'BROKEN'} ({report.audit_records} records)",
        ),
        ("took", f"{report.duration_seconds:.1f}s"),
    ]
    rows += [("problem", p) for p in report.problems]
    return rows


def _worker_rows(report: RehearsalReport) -> str:
    out = []
    for name, secs in report.old_worker_exit_seconds.items():
        full = report.sigterm_to_full_ms.get(name)
        tail = report.last_call_end_to_exit_ms.get(name)
        cells = [
            name,
            "n/a" if secs is None else f"{secs:.2f}s",
            str(report.old_worker_exit_codes.get(name)),
            "already full" if full is None else f"{full:.0f} ms",
            "n/a" if tail is None else f"{tail:.0f} ms",
        ]
        out.append("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in cells) + "</tr>")
    return "".join(out)


STYLE = """
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; color: #111827;
       margin: 24px; background: #fff; }
h1 { font-size: 20px; margin: 0 0 4px; } .sub { color: #4b5563; margin: 0 0 16px; }
.pass { color: #15803d; } .fail { color: #dc2626; }
svg text { font: 12px system-ui, sans-serif; fill: #374151; }
svg .label { font-weight: 600; } svg .note { fill: #111827; }
svg .grid { stroke: #e5e7eb; } svg .mark { stroke: #6b7280; stroke-dasharray: 4 3; }
svg .cutover-line { stroke: #111827; stroke-width: 1.5; }
.tables { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; margin-top: 12px; }
table { border-collapse: collapse; }
td, th { border: 1px solid #e5e7eb; padding: 4px 10px; text-align: left; }
th { background: #f9fafb; }
"""


def render_html(report: RehearsalReport) -> str:
    kind = "rollback" if report.rollback else "deploy"
    verdict = "PASS" if report.ok else "FAIL"
    summary = "".join(
        f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in _summary_rows(report)
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>OpenRTC rehearsal: {kind} {escape(report.from_version)} -&gt; "
        f"{escape(report.to_version)}</title><style>{STYLE}</style></head><body>"
        f"<h1>Rehearsed {kind}: {escape(report.from_version)} &#8594; "
        f'{escape(report.to_version)} <span class="{verdict.lower()}">{verdict}</span></h1>'
        f'<p class="sub">{report.workers_per_version} worker(s) per version, '
        f"{report.calls_placed} simulated calls, real processes and signals.</p>"
        f"{timeline_svg(report)}"
        f'<div class="tables"><table class="summary"><tbody>{summary}</tbody></table>'
        '<table class="old-workers"><thead><tr><th>old worker</th><th>SIGTERM &#8594; exit</th>'
        "<th>exit code</th><th>SIGTERM &#8594; full</th><th>last call end &#8594; exit</th>"
        f"</tr></thead><tbody>{_worker_rows(report)}</tbody></table></div>"
        "</body></html>\n"
    )
