"""Seeing what Q-Tuning does: `qtuning analyze` (a whole data set scored once: `store`, selection in
pools and its stability: `stability`, the command: `analyze`), `qtuning plan` (`plan_preview`),
`qtuning select` (a static selection from stored scores: `static_select`), `qtuning report` (a training
run's page: `run_reading`, `run_report`), the pages' renderer (`document`, `analysis_summary`) and the
plots (`plots`, matplotlib, imported only when a page is drawn). Never imported by training code."""
