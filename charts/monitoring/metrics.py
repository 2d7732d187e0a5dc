"""The committed metric lists (monitoring/metrics/<exporter>.txt) and the
PromQL lexer that checks rules and dashboards against them.

Changes when an exporter gains or loses metrics, or a query uses new syntax.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

MONITORING_DIR = Path(__file__).resolve().parents[2] / "monitoring"
METRICS_DIR = MONITORING_DIR / "metrics"

# Series every scrape produces whatever the exporter, and the alert series.
BUILTIN_METRICS = frozenset({
    "up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_samples_post_metric_relabeling",
    "scrape_series_added", "ALERTS", "ALERTS_FOR_STATE",
})
# Metric lists that rule groups and dashboards are keyed by.
SELF_METRICS = "prometheus"



_PROMQL_KEYWORDS = frozenset({
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
    "offset", "inf", "nan", "atan2",
})


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (a small lexer, not a parser:
    enough for the expressions of our rules and dashboards)."""
    text = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`', '""', expr)
    text = re.sub(r"\{[^{}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\[\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.$])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?", text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in _PROMQL_KEYWORDS:
            continue
        names.add(name)
    return names


@cache
def metric_list(name: str) -> frozenset[str]:
    """The committed list of metric names one exporter exposes (monitoring/metrics/<name>.txt)."""
    path = METRICS_DIR / f"{name}.txt"
    if not path.exists():
        raise ValueError(f"no metric list {path.relative_to(MONITORING_DIR.parent)} for exporter {name!r}")
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return frozenset(line for line in lines if line and not line.startswith("#"))


def known_metric_lists() -> list[str]:
    return sorted(p.stem for p in METRICS_DIR.glob("*.txt"))
