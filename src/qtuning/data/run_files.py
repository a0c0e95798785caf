"""The names of the files qtuning writes, declared once: every writer and reader imports them from here.

Standard library only, so that reading a run (`qtuning report`, `qtuning select`) imports neither trl nor
transformers to learn a file name.

`qtuning train`'s output_dir:

    qtuning_run.json            RUN_FILE: the recipe of the run that writes there (run.check_output_dir)
    qtuning_plans.jsonl         PLAN_LOG_FILE: rank 0's plan log; rank N writes qtuning_plans.rankN.jsonl
    qtuning_summary.json        SUMMARY_FILE: the run's totals, at the end of training
    qtuning_groups.json         GROUPS_FILE: the group of every training row id (group_field set)
    trainer_state.json          TRAINER_STATE_FILE: written by transformers' Trainer (its TRAINER_STATE_NAME)
    checkpoint-N/               checkpoint_dir_name(N), holding the Trainer's files and
      qtuning_state.json        CHECKPOINT_STATE_FILE: the running totals, written last (the checkpoint is complete)
      qtuning_score_cache_rankR.pt   score_cache_name(R): rank R's cached scores, scoring="stale"
    qtuning_report.html         REPORT_FILE: `qtuning report`'s default output

`qtuning analyze`'s output folder: SHARD_DIR/part-NNNNN.parquet (shard_name), META_FILE, SCORES_FILE,
SCORES_CSV_FILE, TOKEN_SCORES_FILE, EU_PLANE_FILE, ANALYSIS_SUMMARY_MD_FILE, ANALYSIS_SUMMARY_HTML_FILE,
STABILITY_FILE.
"""

from __future__ import annotations

# ------------------------------------------------------------------ qtuning train's output_dir
RUN_FILE = "qtuning_run.json"
PLAN_LOG_FILE = "qtuning_plans.jsonl"
PLAN_LOG_RANKS_GLOB = "qtuning_plans.rank*.jsonl"  # the other ranks' plan logs
SUMMARY_FILE = "qtuning_summary.json"
GROUPS_FILE = "qtuning_groups.json"
TRAINER_STATE_FILE = "trainer_state.json"  # transformers.trainer.TRAINER_STATE_NAME (a test pins the two together)
CHECKPOINT_PREFIX = "checkpoint-"  # transformers.trainer_utils.PREFIX_CHECKPOINT_DIR + "-"
CHECKPOINT_GLOB = CHECKPOINT_PREFIX + "*"
CHECKPOINT_STATE_FILE = "qtuning_state.json"
SCORE_CACHE_FILE = "qtuning_score_cache_rank{rank}.pt"  # .format(rank=...): score_cache_name
REPORT_FILE = "qtuning_report.html"

# ------------------------------------------------------------------ qtuning analyze's output folder
SHARD_DIR = "shards"
META_FILE = "meta.json"
SCORES_FILE = "scores.parquet"
SCORES_CSV_FILE = "scores.csv"
TOKEN_SCORES_FILE = "token_scores.parquet"
EU_PLANE_FILE = "eu_plane.png"
ANALYSIS_SUMMARY_MD_FILE = "summary.md"
ANALYSIS_SUMMARY_HTML_FILE = "summary.html"
STABILITY_FILE = "stability.json"
SHARD_GLOB = "part-*.parquet"


def plan_log_name(rank: int = 0) -> str:
    """The plan log of rank `rank`: PLAN_LOG_FILE for rank 0, qtuning_plans.rank<N>.jsonl for the others."""
    return PLAN_LOG_FILE if rank == 0 else PLAN_LOG_FILE.replace(".jsonl", f".rank{rank}.jsonl")


def checkpoint_dir_name(step: int) -> str:
    """The Trainer's checkpoint folder of optimizer step `step`."""
    return f"{CHECKPOINT_PREFIX}{step}"


def score_cache_name(rank: int) -> str:
    """Rank `rank`'s score cache in a checkpoint (scoring="stale")."""
    return SCORE_CACHE_FILE.format(rank=rank)


def shard_name(k: int) -> str:
    """Score shard k of `qtuning analyze`, in SHARD_DIR."""
    return f"part-{k:05d}.parquet"
