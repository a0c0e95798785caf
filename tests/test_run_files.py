"""The names of a run's files, declared once in qtuning.data.run_files: distinct, the Trainer's own where it
writes them, and the ones every writer and reader uses."""

import ast
from pathlib import Path

from qtuning import run_files
from qtuning.data.run_files import (
    CHECKPOINT_GLOB,
    CHECKPOINT_STATE_FILE,
    PLAN_LOG_FILE,
    PLAN_LOG_RANKS_GLOB,
    SUMMARY_FILE,
    TRAINER_STATE_FILE,
    checkpoint_dir_name,
    plan_log_name,
    score_cache_name,
    shard_name,
)

PACKAGE = Path(run_files.__file__).parent
NAMES = {k: v for k, v in vars(run_files).items() if k.isupper() and isinstance(v, str)}


def test_the_names_are_distinct():
    files = [v for k, v in NAMES.items() if k.endswith(("_FILE", "_DIR"))]
    assert len(files) == len(set(files)), files


def test_the_trainers_own_names():
    from transformers.trainer import TRAINER_STATE_NAME
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    assert TRAINER_STATE_FILE == TRAINER_STATE_NAME  # written by transformers' Trainer, read by the report
    assert checkpoint_dir_name(12) == f"{PREFIX_CHECKPOINT_DIR}-12"
    assert Path(checkpoint_dir_name(3)).match(CHECKPOINT_GLOB)


def test_the_per_rank_and_per_step_names():
    from qtuning.data.plan_log import plan_log_path

    assert plan_log_name(0) == PLAN_LOG_FILE and plan_log_name(3) == "qtuning_plans.rank3.jsonl"
    assert Path(plan_log_name(3)).match(PLAN_LOG_RANKS_GLOB) and not Path(PLAN_LOG_FILE).match(PLAN_LOG_RANKS_GLOB)
    assert plan_log_path("out").name == PLAN_LOG_FILE and plan_log_path("out", 3).name == plan_log_name(3)
    assert score_cache_name(1) == "qtuning_score_cache_rank1.pt" and shard_name(7) == "part-00007.parquet"


def test_the_old_homes_name_the_same_files():
    from qtuning.data.plan_log import PLAN_LOG_FILE as plan_log_file
    from qtuning.data.run_files import META_FILE, REPORT_FILE, TOKEN_SCORES_FILE
    from qtuning.data.run_files import TRAINER_STATE_FILE as trainer_state_file
    from qtuning.training.run import RUN_FILE
    from qtuning.training.run_metrics import SUMMARY_FILE as summary_file
    from qtuning.training.trainer_mixin import CHECKPOINT_STATE_FILE as checkpoint_state_file

    assert (plan_log_file, trainer_state_file, summary_file, checkpoint_state_file) == (
        PLAN_LOG_FILE,
        TRAINER_STATE_FILE,
        SUMMARY_FILE,
        CHECKPOINT_STATE_FILE,
    )
    assert {META_FILE, TOKEN_SCORES_FILE, REPORT_FILE, RUN_FILE} <= set(NAMES.values())


def test_no_module_spells_a_run_file_name_itself():
    """Outside run_files.py, no string constant of the package is one of the names (prose may mention
    them inside longer strings)."""
    names = {v for k, v in NAMES.items() if k.endswith("_FILE")} - {"meta.json"}  # (integrations: its own meta.json)
    found = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "run_files.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in names:
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {node.value!r}")
    assert found == []
