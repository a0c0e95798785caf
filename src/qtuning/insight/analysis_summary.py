"""The summary page of `qtuning analyze` (Markdown and HTML): populations and kept samples per quadrant, the
EU-plane plot, threshold stability, warnings and example rows."""

from __future__ import annotations

from ..data.run_files import EU_PLANE_FILE
from .document import Doc, _cell


def _clip(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def analysis_doc(result: dict, records: list[dict], scores, examples: dict[int, list[int]], png: bytes) -> Doc:
    """The summary of `qtuning analyze` (see commands.analyze for `result`)."""
    from ..engine.selection import QUADRANT_NAMES

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
    if result.get("by_group"):
        field_name = result["group_field"]
        doc.heading(f"By {field_name}")
        doc.para(
            f"Each row's {field_name!r}: its samples, quadrant shares (of its samples with a response; the "
            "whole dataset as one pool) and the share of its samples Q-Tuning keeps at each pool size (the "
            "first shuffle). A selection blind to the groups keeps each at about sample_ratio; a group kept "
            "far less often is one the selection would starve during training."
        )
        doc.table(
            ["group", "samples", "Q1", "Q2", "Q3", "Q4"] + [f"kept, pool {label}" for label in labels],
            [
                [g["group"], g["samples"], *g["quadrant_shares"], *(g["kept_share"][label] for label in labels)]
                for g in result["by_group"]
            ],
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
