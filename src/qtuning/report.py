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

import base64
import html
import json
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from .data.plan_log import plan_log_path, read_run_plans
from .data.run_files import (  # a run's file names (qtuning.data.run_files: no trl or transformers needed to read a run)
    CHECKPOINT_GLOB,
    EU_PLANE_FILE,
    PLAN_LOG_FILE,
    REPORT_FILE,
    SUMMARY_FILE,
    TRAINER_STATE_FILE,
)
from .engine.selection import Role
from .errors import PlanLogError, ReportError

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:24px auto;padding:0 16px;
color:#222;line-height:1.45}
h1{font-size:1.6em}h2{margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0 16px}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;
vertical-align:top}th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
.warn{background:#fff4e5;border-left:4px solid #ff9800;padding:6px 10px;margin:6px 0}
.ok{background:#eef8ee;border-left:4px solid #4caf50;padding:6px 10px;margin:6px 0}
figure{display:inline-block;width:48%;margin:6px 0.5%;vertical-align:top}img.plot{width:100%;border:1px solid #eee}
figure.wide{width:90%}
.tokens{font-family:ui-monospace,Menlo,Consolas,monospace;white-space:pre-wrap;border:1px solid #ddd;
padding:8px;margin:4px 0 14px;font-size:13px;line-height:1.7}
.tok{border-radius:3px;padding:1px 0}.tok.kept{background:#e8f0fe}
.tok.pruned{background:#ffcdd2;text-decoration:line-through;text-decoration-color:#c62828}
.sample-head{font-size:0.9em;color:#555;margin-top:10px}
"""


# ---------------------------------------------------------------------------------- documents


@dataclass
class Doc:
    """Blocks rendered to Markdown (`markdown()`) and to one self-contained HTML page (`html()`)."""

    title: str
    blocks: list[tuple] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(("heading", level, text))

    def para(self, text: str) -> None:
        self.blocks.append(("para", text))

    def warnings(self, items: list[str], none_text: str = "no warnings") -> None:
        self.blocks.append(("warnings", list(items), none_text))

    def table(self, headers: list[str], rows: list[list]) -> None:
        self.blocks.append(("table", headers, rows))

    def image(self, png: bytes, alt: str, file_name: str | None = None, wide: bool = False) -> None:
        """file_name: where the Markdown version points (the PNG written next to it); HTML embeds it."""
        self.blocks.append(("image", png, alt, file_name, wide))

    def raw(self, html_text: str, markdown_text: str = "") -> None:
        self.blocks.append(("raw", html_text, markdown_text))

    def markdown(self) -> str:
        out = [f"# {self.title}", ""]
        for block in self.blocks:
            kind = block[0]
            if kind == "heading":
                out += [f"{'#' * block[1]} {block[2]}", ""]
            elif kind == "para":
                out += [block[1], ""]
            elif kind == "warnings":
                out += [f"- **warning:** {w}" for w in block[1]] or [f"- {block[2]}"]
                out.append("")
            elif kind == "table":
                headers, rows = block[1], block[2]
                out.append("| " + " | ".join(headers) + " |")
                out.append("|" + "|".join("---" for _ in headers) + "|")
                out += [
                    "| " + " | ".join(_cell(v).replace("|", "\\|").replace("\n", " ") for v in row) + " |"
                    for row in rows
                ]
                out.append("")
            elif kind == "image":
                if block[3]:
                    out += [f"![{block[2]}]({block[3]})", ""]
            elif kind == "raw" and block[2]:
                out += [block[2], ""]
        return "\n".join(out)

    def html(self) -> str:
        body = [f"<h1>{_e(self.title)}</h1>"]
        for block in self.blocks:
            kind = block[0]
            if kind == "heading":
                body.append(f"<h{block[1]}>{_e(block[2])}</h{block[1]}>")
            elif kind == "para":
                body.append(f"<p>{_e(block[1])}</p>")
            elif kind == "warnings":
                body += [f'<div class="warn">warning: {_e(w)}</div>' for w in block[1]] or [
                    f'<div class="ok">{_e(block[2])}</div>'
                ]
            elif kind == "table":
                head = "".join(f"<th>{_e(h)}</th>" for h in block[1])
                rows = "".join(
                    "<tr>"
                    + "".join(
                        f'<td class="num">{_e(_cell(v))}</td>' if _is_number(v) else f"<td>{_e(_cell(v))}</td>"
                        for v in row
                    )
                    + "</tr>"
                    for row in block[2]
                )
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
            elif kind == "image":
                data = base64.b64encode(block[1]).decode("ascii")
                wide = ' class="wide"' if block[4] else ""
                body.append(
                    f'<figure{wide}><img class="plot" alt="{_e(block[2])}" src="data:image/png;base64,{data}">'
                    f"<figcaption>{_e(block[2])}</figcaption></figure>"
                )
            elif kind == "raw":
                body.append(block[1])
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{_e(self.title)}</title><style>{_CSS}</style></head>\n<body>\n"
            + "\n".join(body)
            + "\n</body></html>\n"
        )


def _e(text: str) -> str:
    return html.escape(str(text), quote=True)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


# ---------------------------------------------------------------------------------- reading a run


def read_json(path: Path, what: str):
    try:
        return json.loads(path.read_text())
    except OSError as exc:  # no permission, a broken disk
        raise ReportError(f"{path} cannot be read ({exc.strerror or exc}); expected {what}") from exc
    except UnicodeDecodeError as exc:
        raise ReportError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); expected {what}") from exc
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); expected {what}") from exc


def find_state(run_dir: Path) -> Path | None:
    """trainer_state.json of the run, or of its newest checkpoint if the run did not finish."""
    if (run_dir / TRAINER_STATE_FILE).is_file():
        return run_dir / TRAINER_STATE_FILE

    def number(path: Path) -> int:
        suffix = path.parent.name.rsplit("-", 1)[-1]
        return int(suffix) if suffix.isdigit() else -1

    checkpoints = sorted(run_dir.glob(f"{CHECKPOINT_GLOB}/{TRAINER_STATE_FILE}"), key=number)
    return checkpoints[-1] if checkpoints else None


@dataclass
class Run:
    """What a run directory holds."""

    path: Path
    log_history: list[dict]
    plans: list[dict]
    summary: dict | None
    state_path: Path | None


def read_run(run_dir: str | os.PathLike) -> Run:
    path = Path(run_dir).expanduser()
    expected = (
        f"the output_dir of a `qtuning train` run (holding {TRAINER_STATE_FILE} and {PLAN_LOG_FILE}, "
        f"or a {CHECKPOINT_GLOB}/{TRAINER_STATE_FILE})"
    )
    if not path.exists():
        raise ReportError(f"{path}: no such directory; expected {expected}")
    if not path.is_dir():
        raise ReportError(f"{path}: is a file, not a directory; expected {expected}")
    state_path = find_state(path)
    plans_path = plan_log_path(path)
    if state_path is None and not plans_path.is_file():
        contents = sorted(p.name for p in path.iterdir())[:8]
        raise ReportError(f"{path}: {'empty' if not contents else 'holds ' + ', '.join(contents)}; expected {expected}")
    history = []
    if state_path is not None:
        state = read_json(state_path, "the Trainer's state with a log_history list")
        if not isinstance(state, dict) or not isinstance(state.get("log_history"), list):
            raise ReportError(f"{state_path}: no 'log_history' list; expected the Trainer's trainer_state.json")
        history = state["log_history"]
    # every rank writes its own log (qtuning_plans.rank1.jsonl, ...): a step's statistics cover all of them
    try:
        plans = read_run_plans(path)
    except PlanLogError as exc:
        raise ReportError(str(exc)) from exc
    summary_path = path / SUMMARY_FILE
    summary = read_json(summary_path, "the run's summary object") if summary_path.is_file() else None
    if not plans and not any("loss" in h for h in history):
        raise ReportError(
            f"{path}: the run logged no training step yet ({state_path or plans_path} is empty); nothing to report"
        )
    return Run(path=path, log_history=history, plans=plans, summary=summary, state_path=state_path)


def per_step_from_plans(plans: list[dict]) -> dict[int, dict]:
    """Per optimizer step, over every micro-batch (and rank) of that step: the Q-Tuning statistics."""
    acc: dict[int, dict] = defaultdict(lambda: defaultdict(float))
    for plan in plans:
        s = plan["samples"]
        a = acc[int(plan["step"])]
        roles = s.get("role", [])
        a["plans"] += 1
        a["samples"] += len(roles)
        a["kept"] += sum(1 for r in roles if r)
        for q in range(1, 5):
            a[f"q{q}"] += sum(1 for v in s.get("quadrant", []) if v == q)
        a["alpha"] += plan.get("alpha", 0.0)
        a["beta"] += plan.get("beta", 0.0)
        a["trainable_tokens"] += sum(s.get("trainable_tokens", []))
        a["kept_tokens"] += sum(s.get("kept_tokens", []))
        a["converged"] += int(bool(plan.get("converged", False)))
    out = {}
    for step, a in sorted(acc.items()):
        n = max(1.0, a["samples"])
        out[step] = {
            "kept_sample_fraction": a["kept"] / n,
            "alpha": a["alpha"] / a["plans"],
            "beta": a["beta"] / a["plans"],
            "kept_token_fraction": a["kept_tokens"] / max(1.0, a["trainable_tokens"]),
            "tokens_scored": a["trainable_tokens"],
            "tokens_trained": a["kept_tokens"],
            "bisection_converged_share": a["converged"] / a["plans"],
            **{f"quadrant_q{q}": a[f"q{q}"] / n for q in range(1, 5)},
        }
    return out


def kept_by_length_quarter(plans: list[dict]) -> list[dict]:
    """Which samples a run kept, by length: every scored sample of the plan log (one entry per time it
    was scored), sorted by its trainable response tokens and cut into four equal-count quarters
    (shortest first; ties keep log order). Per quarter: its token range, the samples scored, and the
    shares kept, kept as Q2 (token-pruned) and kept as Q4 (whole). A selection that favours short or
    long responses shows here; a uniform one keeps the same share of every quarter."""
    scored = [
        (tokens, role)
        for plan in plans
        for tokens, role in zip(plan["samples"].get("trainable_tokens", []), plan["samples"].get("role", []))
    ]
    if len(scored) < 4:
        return []
    scored.sort(key=lambda entry: entry[0])  # stable: equal lengths keep their log order
    out = []
    for q in range(4):
        part = scored[q * len(scored) // 4 : (q + 1) * len(scored) // 4]
        n = len(part)
        out.append(
            {
                "quarter": q + 1,
                "response_tokens": f"{part[0][0]}-{part[-1][0]}",
                "samples_scored": n,
                "kept_share": round(sum(1 for _, r in part if r != Role.DROPPED) / n, 3),
                "q2_share": round(sum(1 for _, r in part if r == Role.Q2) / n, 3),
                "q4_share": round(sum(1 for _, r in part if r == Role.Q4) / n, 3),
            }
        )
    return out


def per_step_from_history(history: list[dict]) -> dict[int, dict]:
    """The training log entries (those with a loss), keyed by step, 'qtuning/' prefixes dropped."""
    out = {}
    for entry in history:
        if "loss" in entry and "step" in entry:
            out[int(entry["step"])] = {k.removeprefix("qtuning/"): v for k, v in entry.items()}
    return out


# ---------------------------------------------------------------------------------- the token view


def load_run_tokenizer(run: Run, tokenizer: str | None = None):
    """The tokenizer given (any model argument), else the one saved with the run or its newest checkpoint;
    None if there is none (the token view then shows ids)."""
    from transformers import AutoTokenizer

    if tokenizer:
        from .data.models import load_tokenizer

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


def write_run_report(cfg: ReportConfig) -> Path:
    from .files import atomic_write_text, check_output_file

    run = read_run(cfg.run_dir)
    out = check_output_file(Path(cfg.output) if cfg.output else run.path / REPORT_FILE, "the report", ReportError)
    # a --tokenizer given is loaded whether or not the page shows tokens: a wrong name is an error, not ignored
    tokenizer = load_run_tokenizer(run, cfg.tokenizer) if cfg.tokenizer else None
    doc = build_run_report(run, cfg, tokenizer)
    atomic_write_text(out, doc.html())
    return out


# ---------------------------------------------------------------------------------- the analysis summary


def _clip(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def analysis_doc(result: dict, records: list[dict], scores, examples: dict[int, list[int]], png: bytes) -> Doc:
    """The summary of `qtuning analyze` (see commands.analyze for `result`)."""
    from .engine.selection import QUADRANT_NAMES

    meta, settings = result["meta"], result["settings"]
    doc = Doc(title=f"EU-plane analysis: {meta['data']} scored by {meta['model']}")
    doc.para(
        f"{result['samples']} records scored ({result['with_response']} with a response token within max_length "
        f"{meta['max_length']}), entropy over {meta['entropy_positions']} positions (scoring time in this "
        f"run: {result['scoring_s']:.1f} s; shards already on disk are not scored again). Selection settings: sample_ratio {settings['sample_ratio']}, token_ratio "
        f"{settings['token_ratio']}, bisection tolerance {settings['bisection_tolerance']}. PPL/Ent rank "
        f"correlation over the samples: {_cell(result['spearman_ppl_ent'])}."
    )
    doc.heading("Warnings")
    doc.warnings(
        result["warnings"],
        "no warnings: no quadrant under 5%, the bisection met its tolerance, the "
        "supplement did not decide most of the selection",
    )
    t = result["whole_dataset_thresholds"]
    doc.heading("The Error-Uncertainty plane (the whole dataset as one pool)")
    doc.para(
        f"Dashed lines: the mid thresholds (PPL {t['ppl_mid']:.4g}, Ent {t['ent_mid']:.4g}); shaded: the kept "
        f"corners of the bisection's last iterate (alpha {t['alpha']:.4f}, {t['iterations']} iterations, "
        f"{'within' if t['converged'] else 'outside'} tolerance): Q2 = PPL > {t['ppl_hi']:.4g} and Ent <= "
        f"{t['ent_lo']:.4g}, Q4 = PPL <= {t['ppl_lo']:.4g} and Ent > {t['ent_hi']:.4g}. Outlined: kept samples "
        "(the supplement may keep samples outside the corners)."
    )
    doc.image(png, "EU plane: log-PPL x entropy, coloured by quadrant", EU_PLANE_FILE, wide=True)
    doc.heading("Quadrant population")
    labels = list(result["populations"])
    headers = ["quadrant"] + [h for label in labels for h in (f"pool {label}: samples", f"pool {label}: kept")]
    total = max(1, result["with_response"])
    rows = []
    for q in range(1, 5):
        row = [QUADRANT_NAMES[q]]
        for label in labels:
            count = result["populations"][label][q - 1]
            row += [f"{count} ({count / total:.1%})", result["kept_by_quadrant"][label][q]]
        rows.append(row)
    rows.append(["no response (never kept)"] + [v for label in labels for v in (result["populations"][label][4], 0)])
    for key, name in (
        ("Q2", "kept as Q2 (token-pruned)"),
        ("Q4", "kept as Q4 (whole)"),
        ("supplemented", "kept by the supplement"),
    ):
        rows.append([name] + [v for label in labels for v in ("", result["kept_roles"][label][key])])
    doc.table(headers, rows)
    doc.para(
        "Quadrants are set by each pool's own mid thresholds; with small pools a sample's quadrant depends on "
        "the pool it falls into."
    )
    doc.heading("Threshold stability")
    doc.para(
        "Per pool size: the kept set of the whole dataset when it is cut into shuffled pools of that size, "
        "against the whole-dataset selection (Jaccard), between shuffles, and how much the pools' mid "
        "thresholds move (mean +- sd over every pool of every shuffle)."
    )
    doc.table(
        [
            "pool",
            "shuffles",
            "pools",
            "Jaccard vs whole",
            "Jaccard across shuffles",
            "PPL line",
            "Ent line",
            "kept (mean)",
            "bisection within tolerance",
            "supplemented share of kept",
        ],
        [
            [
                r["pool"],
                r["shuffles"],
                r["pools"],
                f"{r['jaccard_vs_whole_mean']:.3f} +- {r['jaccard_vs_whole_sd']:.3f}",
                r["jaccard_across_shuffles_mean"],
                f"{r['ppl_line_mean']:.4g} +- {r['ppl_line_sd']:.3g}",
                f"{r['ent_line_mean']:.4g} +- {r['ent_line_sd']:.3g}",
                r["kept_mean"],
                f"{r['converged_share']:.0%}",
                f"{r['supplemented_share']:.0%}",
            ]
            for r in result["stability"]
        ],
    )
    doc.heading("Examples per quadrant (the whole dataset as one pool)")
    by_index = {int(i): position for position, i in enumerate(scores["index"].tolist())}
    for q in range(1, 5):
        doc.heading(QUADRANT_NAMES[q], level=3)
        if not examples.get(q):
            doc.para("no sample in this quadrant")
            continue
        rows = []
        for i in examples[q]:
            sample = scores.iloc[by_index[i]]
            record = records[i]
            prompt = "\n".join(m["content"] for m in record["prompt"])
            response = "\n".join(m["content"] for m in record["completion"])
            rows.append(
                [
                    record["id"],
                    float(sample["ppl"]),
                    float(sample["entropy"]),
                    int(sample["trainable_tokens"]),
                    _clip(prompt, 160),
                    _clip(response, 240),
                ]
            )
        doc.table(["id", "PPL", "Ent", "tokens", "prompt", "response"], rows)
    return doc
