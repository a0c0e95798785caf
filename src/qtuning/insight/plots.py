"""PNG plots for `qtuning analyze` and `qtuning report` (matplotlib, rendered by Agg).

Never imported by training code: only the analysis and report commands import it. Figures are
made with `matplotlib.figure.Figure` directly (no pyplot, no global backend switch), so importing
this module changes nothing for a notebook's own plots. Every function returns the PNG as bytes
(to write to a file or to embed in an HTML page as a data URI).
"""

from __future__ import annotations

import io
import math

try:
    import matplotlib.ticker
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch, Rectangle
except ImportError as exc:  # pragma: no cover - matplotlib is in the dev and plot extras
    raise ImportError("qtuning's plots need matplotlib: pip install 'qtuning[insight]'") from exc

QUADRANT_COLOURS = {1: "#d62728", 2: "#ff7f0e", 3: "#7f7f7f", 4: "#1f77b4"}
QUADRANT_LABELS = {1: "Q1 harmful noise", 2: "Q2 misconception", 3: "Q3 redundant", 4: "Q4 calibration"}


def _figure(width: float, height: float):
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)  # the Agg canvas, for this figure only
    return fig, fig.subplots()


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def eu_plane(
    ppl: list[float],
    entropy: list[float],
    quadrant: list[int],
    kept: list[bool],
    *,
    ppl_lo: float,
    ppl_hi: float,
    ent_lo: float,
    ent_hi: float,
    title: str = "Error-Uncertainty plane",
) -> bytes:
    """Scatter of the samples: log-PPL on x, entropy on y, coloured by quadrant; kept ones outlined.

    The dashed lines are the mid thresholds ((lo + hi) / 2 on each axis), the shaded corners the
    kept regions of the bisection's last iterate: Q2 (PPL > ppl_hi, Ent <= ent_lo) and Q4
    (PPL <= ppl_lo, Ent > ent_hi). Samples without a response (quadrant 0) are not drawn.
    """
    points = [(math.log(p), e, q, k) for p, e, q, k in zip(ppl, entropy, quadrant, kept) if q and p > 0]
    fig, ax = _figure(7.5, 5.5)
    if points:
        xs = [p[0] for p in points]
        ys = [p[1] for p in points]
        pad_x = 0.05 * (max(xs) - min(xs) or 1.0)
        pad_y = 0.05 * (max(ys) - min(ys) or 1.0)
        x0, x1, y0, y1 = min(xs) - pad_x, max(xs) + pad_x, min(ys) - pad_y, max(ys) + pad_y
        log_lo, log_hi = math.log(max(ppl_lo, 1e-300)), math.log(max(ppl_hi, 1e-300))
        # Kept corners: Q2 bottom right, Q4 top left.
        ax.add_patch(
            Rectangle(
                (log_hi, y0), max(0.0, x1 - log_hi), max(0.0, ent_lo - y0), color=QUADRANT_COLOURS[2], alpha=0.12, lw=0
            )
        )
        ax.add_patch(
            Rectangle(
                (x0, ent_hi), max(0.0, log_lo - x0), max(0.0, y1 - ent_hi), color=QUADRANT_COLOURS[4], alpha=0.12, lw=0
            )
        )
        for q in (1, 2, 3, 4):
            for is_kept in (False, True):
                sel = [p for p in points if p[2] == q and p[3] == is_kept]
                if sel:
                    ax.scatter(
                        [p[0] for p in sel],
                        [p[1] for p in sel],
                        s=26 if is_kept else 16,
                        c=QUADRANT_COLOURS[q],
                        alpha=0.9 if is_kept else 0.45,
                        edgecolors="black" if is_kept else "none",
                        linewidths=0.6,
                    )
        ax.axvline(math.log(max((ppl_lo + ppl_hi) / 2, 1e-300)), color="black", ls="--", lw=1)
        ax.axhline((ent_lo + ent_hi) / 2, color="black", ls="--", lw=1)
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
    counts = {q: sum(1 for p in points if p[2] == q) for q in (1, 2, 3, 4)}
    handles = [Patch(color=QUADRANT_COLOURS[q], label=f"{QUADRANT_LABELS[q]} ({counts[q]})") for q in (1, 2, 3, 4)]
    handles.append(Patch(facecolor="white", edgecolor="black", label=f"kept ({sum(1 for p in points if p[3])})"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, framealpha=0.85)
    ax.set_xlabel("log PPL (mean token NLL, nats)")
    ax.set_ylabel("Ent (mean token entropy, nats)")
    ax.set_title(title)
    ax.grid(alpha=0.25)
    return _png(fig)


def lines(
    steps: list[float], series: dict[str, list[float | None]], *, title: str, ylabel: str, percent: bool = False
) -> bytes:
    """One line per series over the optimizer steps (None values are gaps)."""
    fig, ax = _figure(6.4, 3.4)
    for name, values in series.items():
        ax.plot(steps, [float("nan") if v is None else v for v in values], marker="o", ms=3, lw=1.4, label=name)
    if percent:
        ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.25)
    if len(series) > 1:
        ax.legend(fontsize=8)
    return _png(fig)
