"""The report's bar chart: baseline vs candidates per quality metric, with 95% intervals.

Only quality metrics are drawn (cost and latency live on other scales and in the
table); each bar carries the bootstrap interval of its own value. The Agg backend
renders without a display, as CI runners have none.
"""

from __future__ import annotations

import math
from pathlib import Path

from ladle.evaluate.result import OPERATIONAL, EvalReport


def chart_keys(report: EvalReport) -> list[str]:
    return [
        k for k, s in report.baseline.scores.items() if k not in OPERATIONAL and s.better != "none"
    ]


def bar_chart(report: EvalReport, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    keys = chart_keys(report)
    contestants = [*report.baselines, *report.candidates]
    width = 0.8 / len(contestants)
    x = np.arange(len(keys))
    top = 0.0
    fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(keys) + 2), 3.6), dpi=110)
    for j, c in enumerate(contestants):
        vals = np.array([c.scores[k].value() for k in keys])
        lo = np.array([c.ci.get(k, (math.nan, math.nan))[0] for k in keys])
        hi = np.array([c.ci.get(k, (math.nan, math.nan))[1] for k in keys])
        err = np.nan_to_num(np.vstack([vals - lo, hi - vals]).clip(min=0))
        top = max(top, float(np.nanmax(np.append(hi, vals), initial=0.0)))
        ax.bar(
            x + (j - (len(contestants) - 1) / 2) * width,
            np.nan_to_num(vals),
            width,
            yerr=err,
            capsize=3,
            label=c.name,
        )
    if top <= 1.0:  # rates and accuracies: show the whole 0..1 scale
        ax.set_ylim(0, 1.05)
    ax.set_xticks(x, keys, rotation=20, ha="right")
    ax.set_ylabel("score (95% CI)")
    ax.set_title(f"{report.recipe}: baseline vs fine-tuned ({report.n_examples} examples)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
