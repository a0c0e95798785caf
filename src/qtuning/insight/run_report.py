"""Self-contained pages: the summary of `qtuning analyze` and the report of a training run.

    qtuning report RUN_DIR [-o report.html]

`Doc` is a tiny document model that renders to both Markdown and HTML, so each summary is
written once. HTML pages embed their PNG plots as base64 data URIs and carry no script: one file,
readable offline. The run report reads what `qtuning train` leaves in its output_dir:

    trainer_state.json     log_history: loss, qtuning/* metrics (or the newest checkpoint-*/ copy)
    qtuning_plans*.jsonl   per micro-batch plans (one log per rank); per step: kept samples, quadrants, alpha/beta,
                           tokens scored/trained; Q2 samples' tokens, smoothed scores, kept flags
    qtuning_summary.json   the end-of-run summary
    tokenizer files        to decode the token view (falls back to token ids)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..data.run_files import CHECKPOINT_GLOB, REPORT_FILE
from ..errors import ReportError
from .document import Doc, _e
from .run_reading import (
    Run,
    kept_by_group,
    kept_by_length_quarter,
    kept_share_by_group_over_steps,
    per_step_from_history,
    per_step_from_plans,
    read_run,
)


def load_run_tokenizer(run: Run, tokenizer: str | None = None):
    """The tokenizer given (any model argument), else the one saved with the run or its newest checkpoint;
    None if there is none (the token view then shows ids)."""
    from transformers import AutoTokenizer

    if tokenizer:
        from ..data.models import load_tokenizer

        return load_tokenizer(tokenizer)
    checkpoints = sorted(run.path.glob(CHECKPOINT_GLOB), key=lambda p: p.stat().st_mtime, reverse=True)
    for candidate in [run.path, *checkpoints]:
        if (candidate / "tokenizer_config.json").is_file() or (candidate / "tokenizer.json").is_file():
            try:
                return AutoTokenizer.from_pretrained(str(candidate))
            except (OSError, ValueError):  # unreadable tokenizer files: try the next place, else fall back to ids
                continue
    return None


def _token_text(tokenizer, token_id: int) -> str:
    if tokenizer is None:
        return f"[{token_id}]"
    text = tokenizer.decode([token_id])
    return text.replace("\n", "\u21b5\n") if text else f"[{token_id}]"


def token_view_html(entries: list[dict], tokenizer) -> str:
    """One block per Q2 sample: each response token a span; pruned ones struck through; s_i on hover."""
    parts = [
        '<div class="token-view">',
        '<p>Legend: <span class="tok kept">kept token</span> <span class="tok pruned">pruned token</span> '
        "(hover a token for its smoothed score s<sub>i</sub>).</p>",
    ]
    for entry in entries:
        pruned = sum(1 for k in entry["kept"] if not k)
        parts.append(
            f'<div class="sample-head">step {entry["step"]}, sample {_e(entry["id"])}: PPL {entry["ppl"]:.3g}, '
            f"Ent {entry['entropy']:.3g}, {pruned} of {len(entry['kept'])} response tokens pruned</div>"
        )
        spans = []
        for token_id, score, kept in zip(entry["token_ids"], entry["score"], entry["kept"]):
            status = "kept" if kept else "pruned"
            spans.append(
                f'<span class="tok {status}" title="s = {score:.4g} ({status})">'
                f"{_e(_token_text(tokenizer, int(token_id)))}</span>"
            )
        parts.append(f'<div class="tokens">{"".join(spans)}</div>')
    parts.append("</div>")
    return "\n".join(parts)


def q2_token_entries(plans: list[dict], limit: int) -> list[dict]:
    """The last `limit` logged Q2 samples, in step order, with their PPL and Ent."""
    entries = []
    for plan in plans:
        samples = plan["samples"]
        position = {sid: i for i, sid in enumerate(samples.get("id", []))}
        for tokens in plan.get("tokens") or []:
            i = position.get(tokens["id"])
            entries.append(
                {
                    **tokens,
                    "step": plan["step"],
                    "ppl": samples["ppl"][i] if i is not None else float("nan"),
                    "entropy": samples["entropy"][i] if i is not None else float("nan"),
                }
            )
    return entries[-limit:] if limit else []


# ---------------------------------------------------------------------------------- the run report


@dataclass
class ReportConfig:
    """Settings of `qtuning report` (a training run's output_dir -> one HTML page)."""

    run_dir: str = field(default="", metadata={"help": "The output_dir of a `qtuning train` run.", "positional": True})
    output: str = field(default="", metadata={"help": f"HTML file to write (default: RUN_DIR/{REPORT_FILE})."})
    token_samples: int = field(
        default=12, metadata={"help": "Q2 samples shown in the token view (the last ones logged)."}
    )
    tokenizer: str = field(
        default="", metadata={"help": "Tokenizer to decode the token view with (default: the one saved in RUN_DIR)."}
    )


def _series(steps: list[int], table: dict[int, dict], key: str) -> list[float | None]:
    return [table.get(s, {}).get(key) for s in steps]


def environment_rows(summary: dict) -> list[list]:
    """[field, value] rows of a summary's "environment" and "inputs" blocks (absent in older runs)."""
    rows: list[list] = []
    env = summary.get("environment")
    if isinstance(env, dict):
        rows += [[k, v] for k, v in env.items() if not isinstance(v, dict)]
        packages = env.get("packages")
        rows += [[f"package {k}", v] for k, v in (packages.items() if isinstance(packages, dict) else ())]
    inputs = summary.get("inputs")
    for name, fingerprint in inputs.items() if isinstance(inputs, dict) else ():
        if isinstance(fingerprint, dict):
            shown = {k: v for k, v in fingerprint.items() if k != "files_listed"}
            rows.append([f"input {name}", ", ".join(f"{k} {v}" for k, v in shown.items())])
    return rows


def build_run_report(run: Run, cfg: ReportConfig, tokenizer=None) -> Doc:
    """The page of one run; `tokenizer`: already loaded (default: cfg.tokenizer, else the run's own)."""
    from . import plots

    history = per_step_from_history(run.log_history)
    from_plans = per_step_from_plans(run.plans)
    # Q-Tuning statistics: exact per step from the plan log; else the logged (per logging window) values.
    qt, qt_source = (
        (from_plans, "the plan log, per optimizer step")
        if from_plans
        else (history, "trainer_state.json's log_history, per logging window")
    )
    doc = Doc(title=f"qtuning run report: {run.path.name}")
    doc.para(
        f"Run directory {run.path}. Q-Tuning statistics from {qt_source}; loss from "
        f"{run.state_path.name if run.state_path else 'nowhere (no trainer_state.json)'}."
    )
    if run.summary:
        doc.heading("Summary")
        doc.table(["field", "value"], [[k, v] for k, v in run.summary.items() if not isinstance(v, (list, dict))])
        provenance = environment_rows(run.summary)
        if provenance:
            doc.heading("What it ran with")
            doc.para(
                "The software, machine and inputs of the run (qtuning_summary.json's environment and inputs): "
                "where two runs of one recipe differ, look here first."
            )
            doc.table(["field", "value"], provenance)
    doc.heading("Over the steps")
    steps = sorted(qt)
    plots_made = 0

    def plot(keys: dict[str, str], title: str, ylabel: str, percent: bool = False, table=qt, at=steps):
        nonlocal plots_made
        series = {label: _series(at, table, key) for label, key in keys.items()}
        series = {k: v for k, v in series.items() if any(x is not None for x in v)}
        if not series:
            doc.para(f"{title}: not logged in this run.")
            return
        doc.image(plots.lines(at, series, title=title, ylabel=ylabel, percent=percent), title)
        plots_made += 1

    plot({"kept samples": "kept_sample_fraction"}, "Kept fraction of samples", "share", percent=True)
    plot({f"Q{q}": f"quadrant_q{q}" for q in range(1, 5)}, "Quadrant shares (mid thresholds)", "share", percent=True)
    plot({"alpha": "alpha", "beta": "beta"}, "Bisection quantile levels alpha / beta", "quantile level")
    plot({"kept tokens": "kept_token_fraction"}, "Kept fraction of the response tokens", "share", percent=True)
    loss_steps = sorted(history)
    plot({"training loss": "loss"}, "Training loss", "loss", table=history, at=loss_steps)
    plot({"scored": "tokens_scored", "trained": "tokens_trained"}, "Response tokens scored vs trained", "tokens")
    quarters = kept_by_length_quarter(run.plans)
    if quarters:
        doc.heading("Which samples it kept, by response length")
        doc.para(
            "Every scored sample of the plan log, cut into four equal quarters by its trainable response tokens "
            "(shortest first). A selection with no length preference keeps the same share of each quarter; "
            "on a procedural arithmetic task, Q-Tuning at 25% kept the shortest quarter about twice as often "
            "as the longest (benchmarks/RESULTS.md, evidence suite)."
        )
        doc.table(
            ["quarter", "response tokens", "samples scored", "kept", "kept as Q2", "kept as Q4"],
            [
                [q["quarter"], q["response_tokens"], q["samples_scored"], q["kept_share"], q["q2_share"], q["q4_share"]]
                for q in quarters
            ],
        )
    if run.groups is not None and run.plans:
        _group_section(doc, run, plot)
    entries = q2_token_entries(run.plans, cfg.token_samples)
    doc.heading("Token view of Q2 samples")
    if entries:
        if tokenizer is None:
            tokenizer = load_run_tokenizer(run, cfg.tokenizer or None)
        note = "" if tokenizer is not None else " No tokenizer was found in the run directory: tokens show as ids."
        doc.para(
            f"The last {len(entries)} Q2 (token-pruned) samples of the plan log: each response token, pruned "
            f"ones struck through in red; hover a token for its neighbour-smoothed perplexity s_i.{note}"
        )
        doc.raw(
            token_view_html(entries, tokenizer), f"{len(entries)} Q2 samples with token details: see the HTML page."
        )
    else:
        doc.para("No Q2 token details in this run (plan_log_tokens off, no plan log, or no Q2 sample).")
    return doc


MAX_GROUPS_SHOWN = 30  # table rows; the plot shows the 8 largest groups


def _group_section(doc: Doc, run: Run, plot) -> None:
    """Per group of rows (group_field): kept shares, loss-token shares, and the kept share over the run."""
    table = kept_by_group(run.plans, run.groups)
    doc.heading(f"Which samples it kept, by {run.group_field}")
    doc.para(
        f"Every training row's {run.group_field!r} value (qtuning_groups.json) joined with the plan log. "
        "The kept column is the share of the times a group's rows were scored that they were kept; a selection blind "
        "to the groups keeps each about equally, and gives each group about its share of the tokens scored "
        "as its share of the loss tokens. In our mixture experiment Q-Tuning kept the arithmetic rows 5% "
        "of the times it saw them and that family's exact match fell from 10.0% to 2.9% against Random "
        "(benchmarks/RESULTS.md, second evidence design): a group starved here is worth an A/B test."
    )
    shown = table[:MAX_GROUPS_SHOWN]
    doc.table(
        [
            "group",
            "rows",
            "rows trained",
            "samples scored",
            "kept",
            "kept as Q2",
            "kept as Q4",
            "share of the tokens scored",
            "share of the loss tokens trained",
        ],
        [
            [
                g["group"],
                g["rows"],
                g["rows_trained"],
                g["samples_scored"],
                g["kept_share"],
                g["q2_share"],
                g["q4_share"],
                g["tokens_scored_share"],
                g["tokens_trained_share"],
            ]
            for g in shown
        ],
    )
    if len(table) > len(shown):
        doc.para(f"{len(table) - len(shown)} smaller groups not shown.")
    steps = {int(p["step"]) for p in run.plans}
    # at least 4 steps a range: one step holds too few of a group's rows to read a share from
    ends, series = kept_share_by_group_over_steps(run.plans, run.groups, bins=max(1, min(10, len(steps) // 4)))
    largest = [g["group"] for g in table[:8]]
    shares = {g: series[g] for g in largest if g in series}
    table_over_steps = {step: {g: shares[g][i] for g in shares} for i, step in enumerate(ends)}
    plot(
        {g: g for g in shares},
        f"Kept share by {run.group_field}, per range of steps",
        "share",
        percent=True,
        table=table_over_steps,
        at=ends,
    )


def write_run_report(cfg: ReportConfig) -> Path:
    from ..files import atomic_write_text, check_output_file

    run = read_run(cfg.run_dir)
    out = check_output_file(Path(cfg.output) if cfg.output else run.path / REPORT_FILE, "the report", ReportError)
    # a --tokenizer given is loaded whether or not the page shows tokens: a wrong name is an error, not ignored
    tokenizer = load_run_tokenizer(run, cfg.tokenizer) if cfg.tokenizer else None
    doc = build_run_report(run, cfg, tokenizer)
    atomic_write_text(out, doc.html())
    return out
