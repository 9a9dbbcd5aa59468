"""The tables benchmarks/run.py prints: medians per scale, squashkit's processes, the ratios.

Plain functions of the results run.py collects (``scales``: one dict per scale with its
``median`` per measurement and its ``samples``), so a saved results JSON can be printed again::

    python -c "import json, sys; sys.path.insert(0, 'benchmarks'); import report; \
        r = json.load(open('benchmarks/results/latest.json')); print(report.markdown(r['scales'], r['measurements']))"
"""

from __future__ import annotations

from collections.abc import Callable

# What each measurement is called in the tables, in the order run.py runs them.
LABELS = {
    "pg_dump": "`pg_dump -Fc`",
    "pg_restore": "`createdb` + extensions + `pg_restore`",
    "shell_procedure": "shell procedure, steps 1-7",
    "backup": "squashkit backup",
    "promote": "squashkit promote dev-to-prod",
    "promote_squash": "squashkit promote dev-to-prod --squash",
    "rollback_json": "squashkit rollback BUNDLE/db.json",
    "rollback_dump": "squashkit rollback BUNDLE",
    "rollback_kept": "squashkit rollback --kept",
}
# Those run through squashkit's command line, whose processes are logged.
SQUASHKIT_COMMANDS = ("backup", "promote", "promote_squash", "rollback_json", "rollback_dump", "rollback_kept")
# The ratios the issue asks for: (label, numerator, denominator), of median wall times.
RATIOS = [
    ("backup / `pg_dump -Fc`", "backup", "pg_dump"),
    ("rollback from db.json / rollback from the bundle (dump)", "rollback_json", "rollback_dump"),
    ("promote --squash / shell procedure steps 1-7", "promote_squash", "shell_procedure"),
]


def _s(value: float) -> str:
    return f"{value:.1f} s" if value >= 10 else f"{value:.2f} s"


def _mb(kb: float | None) -> str:
    if kb is None:
        return "?"
    value = kb / 1024
    return f"{value:.0f} MiB" if value >= 10 else f"{value:.1f} MiB"


def _bytes(count: float) -> str:
    return _mb(count / 1024)


def _table(scales: list[dict], rows: list[tuple[str, Callable[[dict], str]]]) -> list[str]:
    """One column per scale; ``rows`` are (label, cell(scale) -> str)."""
    lines = ["| | " + " | ".join(f"--rows {s['rows']} ({s['total_rows']:,} rows)" for s in scales) + " |",
             "|---" * (len(scales) + 1) + "|"]
    lines += [f"| {label} | " + " | ".join(cell(s) for s in scales) + " |" for label, cell in rows]
    return lines


def _cell(scale: dict, name: str, show) -> str:
    """A measurement's cell: ``show(median)``, or why it has none."""
    median = scale["median"].get(name)
    if median is None:
        return "not run"
    if median["failed"]:
        error = median["error"][:120].replace("|", "\\|")  # a | would end the table's cell
        return f"**failed** ({median['failed']}/{len(scale['samples'])}): {error}"
    return show(median)


def _ratio(scale: dict, top: str, bottom: str) -> str:
    a, b = scale["median"].get(top), scale["median"].get(bottom)
    if not a or not b:
        return "not run"
    if a["failed"] or b["failed"]:
        return "n/a (failed)"
    return f"×{a['wall_s'] / b['wall_s']:.2f}"


def markdown(scales: list[dict], selected: list[str]) -> str:
    """The tables: times and peaks, the shell procedure's steps, squashkit's processes, the ratios."""
    repeat = len(scales[0]["samples"])
    out = [f"Wall time · peak RSS of the largest process of the command's tree (median of {repeat}):", ""]
    rows = [("`seed_data` (setup, once)", lambda s: _s(s["seed_s"]) if s["seed_s"] is not None else "template reused"),
            ("load average (1 min), before → after", lambda s: f"{s['load_before'][0]:.1f} → {s['load_after'][0]:.1f}")]
    for name in selected:
        rows.append((LABELS[name], lambda s, n=name: _cell(s, n, lambda m: f"{_s(m['wall_s'])} · {_mb(m['max_rss_kb'])}")))
    if "pg_dump" in selected:
        rows.append(("`pg_dump -Fc` file", lambda s: _cell(s, "pg_dump", lambda m: _bytes(m["dump_bytes"]))))
    if "backup" in selected:
        rows.append(("bundle's db.json / db.dump", lambda s: _cell(s, "backup", lambda m: f"{_bytes(m['db_json_bytes'])} / {_bytes(m['db_dump_bytes'])}")))
    out += _table(scales, rows)

    if "shell_procedure" in selected:
        steps = next((s["median"]["shell_procedure"].get("steps") for s in scales if s["median"]["shell_procedure"].get("steps")), {})
        out += ["", "The shell procedure, step by step (median):", ""]
        out += _table(scales, [(f"{i + 1}. {step}", lambda s, st=step: _cell(s, "shell_procedure", lambda m: _s(m["steps"][st]) if st in m.get("steps", {}) else "?"))
                               for i, step in enumerate(steps)])

    ours = [name for name in selected if name in SQUASHKIT_COMMANDS]
    if ours:
        out += ["", "squashkit's processes: `manage.py` runs, their summed wall time (of it, start-up until "
                "`django.setup()` returned) · peak RSS of squashkit's own process / of its largest `manage.py`:", ""]
        out += _table(scales, [(LABELS[name], lambda s, n=name: _cell(s, n, lambda m: (
            f"{m['django_processes']:.0f}: {_s(m['django_wall_s'])} ({_s(m['django_startup_s'])}) · "
            f"{_mb(m.get('squashkit_rss_kb'))} / {_mb(m.get('django_max_rss_kb'))}"))) for name in ours])

    ratios = [(label, lambda s, t=top, b=bottom: _ratio(s, t, b)) for label, top, bottom in RATIOS if top in selected and bottom in selected]
    if ratios:
        out += ["", "Ratios of the median wall times:", ""] + _table(scales, ratios)

    if ours and len(scales) > 1:
        small, large = scales[0], scales[-1]
        out += ["", f"Peak RSS at --rows {large['rows']} / at --rows {small['rows']} (×1.00: flat):", "",
                "| | whole tree | squashkit's process | largest `manage.py` |", "|---|---|---|---|"]
        for name in ours:
            a, b = large["median"].get(name, {}), small["median"].get(name, {})
            if a.get("failed", 1) or b.get("failed", 1):
                out.append(f"| {LABELS[name]} | n/a (failed) | | |")
                continue
            cells = [f"×{a[k] / b[k]:.2f}" if a.get(k) and b.get(k) else "?" for k in ("max_rss_kb", "squashkit_rss_kb", "django_max_rss_kb")]
            out.append(f"| {LABELS[name]} | " + " | ".join(cells) + " |")
    return "\n".join(out)
