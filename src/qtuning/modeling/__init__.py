"""What runs the model for the engine, and `QTuner`, the three calls for a custom training loop.

The no-grad probe that scores a batch (`probe`), the kept rows and their loss (`kept_batch`),
padding-free batches (`padding_free`), and QTuner (`qtuner`). Imports the engine and torch; loads no
model library at import.
"""
