"""Shared test set-up: the marks that define the fast loop.

The fast loop is `pytest -m "not slow and not real_model"` (`make test-fast`); the full suite, plain
`pytest`, runs everything (CI: scripts/test.sh). Most `slow` marks are set here, in one place, not in
the test files: whole modules (SLOW_MODULES) and single tests (SLOW_TESTS, "module::function" for every
parametrization, "module::function[id]" for one), each group with its reason. tests/test_fast_loop.py
checks that every name listed here still exists. A test that carried `slow` in its own file before
these marks (minutes long) also gets `long`: scripts/test_oldest.sh runs `-m "not long"`, the same
tests as before the fast loop existed.
"""

import pytest

# module -> why all of it is slow
SLOW_MODULES = {
    "test_distributed": "two ranks under torchrun / accelerate launch, DeepSpeed ZeRO (about 4 min)",
    "test_faults": "kills, hangs and SIGTERMs of launched runs, then resumes (about 3.5 min)",
    "test_resume": "SIGKILL of a `qtuning train` subprocess, then a resume (about 25 s per case)",
    "test_soak": "a soak run watching memory, file descriptors and plan-log growth (about 16 s)",
    "test_core_install": "fresh interpreters with trl / transformers hidden (subprocesses, about 10 s)",
}

# (reason, tests): every test here is slow for that one reason
SLOW_TESTS = (
    (
        "starts `python -m qtuning.cli`, `python -c` or an example script in a subprocess (2-45 s each)",
        (
            "test_analysis::test_bad_dataset_exits_non_zero_from_the_command_line",
            "test_cli::test_asset_error_is_one_line",
            "test_cli::test_bad_value_names_the_field",
            "test_cli::test_train_command_end_to_end_on_a_tiny_model",
            "test_cli::test_train_help_documents_every_qtuning_field",
            "test_cli::test_unknown_model_is_one_line_naming_it_and_the_accepted_forms",
            "test_cli_bad_arguments::test_data_arguments_fail_in_one_line",
            "test_integrations::test_qtuning_llamafactory_subcommand_without_the_framework",
            "test_layering::test_import_qtuning_is_light",
            "test_layering::test_the_engine_imports_no_model_library",
            "test_layering::test_the_trainer_mixin_imports_transformers_but_no_trl",
            "test_qtuner::test_the_example_runs",
            "test_storage::test_a_damaged_cached_file_is_fetched_again_and_a_bad_download_refused",
            "test_storage::test_disk_full_during_training_keeps_the_last_checkpoint_and_resumes_exactly",
            "test_storage::test_plan_log_on_a_full_disk_is_one_error_and_resume_drops_the_cut_line",
            "test_storage::test_two_processes_fetching_a_real_asset_from_the_index",
            "test_storage::test_two_processes_fetching_into_one_cache_download_once",
            "test_storage::test_unwritable_output_dirs_through_qtuning_train",
        ),
    ),
    (
        "starts headless chromium on `qtuning report`'s page, or lm_eval (2-5 s)",
        (
            "test_report::test_report_in_headless_chromium",
            "test_report::test_the_console_check_catches_errors",
            "test_evaluation::test_end_to_end_planted_perfect_cases[lm_eval]",
        ),
    ),
    (
        "trains, scores or evaluates a tiny model for over ~0.5 s",
        (
            "test_analysis::test_interrupted_analyze_resumes_without_rescoring",
            "test_analysis::test_resuming_with_other_settings_is_refused",
            "test_comparison::test_eval_output_carries_the_per_item_scores_compare_reads",
            "test_evaluation::test_lora_adapter_folder_is_merged",
            "test_evidence::test_a_seed_gives_every_arm_the_same_data_order_and_lora_init",
            "test_integrations::test_a_dumped_run_replays_to_the_same_plans",
            "test_integrations::test_alternate_times_qtuning_and_the_framework_step_on_the_same_batches",
            "test_integrations::test_compare_finds_the_first_differing_step",
            "test_numbers::test_trainer_runs_on",
            "test_padding_free::test_packed_training_sees_every_sample_once_per_epoch",
            "test_padding_free::test_padding_free_equals_padded_plans_loss_and_gradients",
            "test_padding_free::test_padding_free_training_runs_and_logs_segments",
            "test_policies::test_trainer_rho1_reference_is_the_initial_model",
            "test_report::test_report_of_a_real_run",
            "test_scoring_mode::test_the_trainer_runs_both_modes_then_the_cheaper_one",
            "test_stale::test_first_epoch_plans_equal_probe_mode_then_scores_follow_the_rows",
            "test_static_select::test_analyze_select_then_train_on_the_subset",
            "test_storage::test_save_total_limit_rotates_only_complete_checkpoints",
            "test_trainer::test_full_data_baseline_trains_every_token",
            "test_trainer::test_gradient_accumulation_equals_one_big_batch",
            "test_trainer::test_logs_plan_file_and_summary",
            "test_trainer::test_lora_trains_only_the_adapter",
            "test_trainer_mixin::test_gradient_accumulation_on_a_plain_trainer_equals_one_big_batch",
            "test_trainer_mixin::test_mixin_on_a_plain_trainer_trains_and_plans_as_the_sft_trainer",
        ),
    ),
    (
        "300-example hypothesis properties, 2-4 s each (the naive-reference and invariant ones stay fast)",
        (
            "test_selection_properties::test_a_pool_of_parts_plans_like_their_concatenation",
            "test_selection_properties::test_permuting_the_batch_permutes_the_plan",
        ),
    ),
    (
        "fuzzes data files of one kind with hypothesis (3-6 s per kind), or counts what that fuzzing did",
        (
            "test_fuzz_data::test_fuzzed_files_load_or_name_file_and_row",
            "test_fuzz_data::test_the_fuzzing_counted_its_cases",
        ),
    ),
)

_SLOW_NAMES = frozenset(name for _, names in SLOW_TESTS for name in names)


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects (the mark plugin's hook of the same name)
def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("slow") is not None:
            item.add_marker(pytest.mark.long)  # marked slow by its own file: minutes long
        module = item.path.stem
        function = getattr(item, "originalname", item.name)
        if module in SLOW_MODULES or f"{module}::{function}" in _SLOW_NAMES or f"{module}::{item.name}" in _SLOW_NAMES:
            item.add_marker(pytest.mark.slow)
