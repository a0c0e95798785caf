"""The core install (`pip install qtuning`: torch and numpy): the engine, plan_batch and QTuner work without
transformers, trl, datasets, peft or accelerate, and what needs an extra says which, in one line.

Each check runs in a fresh interpreter in which those packages are uninstalled as far as Python can
tell: their sys.modules entries are None, so `import trl` raises ModuleNotFoundError(name="trl") and
importlib.util.find_spec("trl") returns None (what other libraries' is-it-installed probes use).
"""

import subprocess
import sys
import textwrap

BLOCKER = """
import sys

BLOCKED = {blocked!r}
for name in BLOCKED:
    sys.modules[name] = None  # not installed, as far as import and find_spec can tell


def loaded_blocked():
    \"\"\"The blocked packages (or any of their submodules) that got imported after all.\"\"\"
    return sorted(m for m, mod in sys.modules.items() if m.split(".")[0] in BLOCKED and mod is not None)
"""
EXTRA_PACKAGES = ("transformers", "trl", "datasets", "peft", "accelerate")


def run_without(blocked, code: str) -> subprocess.CompletedProcess:
    script = BLOCKER.format(blocked=set(blocked)) + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)


def test_the_engine_and_qtuner_run_with_torch_alone():
    proc = run_without(
        EXTRA_PACKAGES,
        """
        import torch

        import qtuning
        from qtuning import QTuner, QTuningConfig, plan_batch


        class Backbone(torch.nn.Module):  # causal: each position sees the mean of its prefix
            def __init__(self, vocab, hidden):
                super().__init__()
                self.embed = torch.nn.Embedding(vocab, hidden)
                self.mix = torch.nn.Linear(hidden, hidden)

            def forward(self, input_ids, attention_mask=None, **kwargs):
                h = self.embed(input_ids).cumsum(dim=1)  # (B, T, H)
                h = h / torch.arange(1, input_ids.shape[1] + 1).view(1, -1, 1)
                return (torch.tanh(self.mix(h)),)


        class Config:  # what qtuning reads of a model's config: its dropout and soft-cap settings
            def to_dict(self):
                return {}


        class TinyLM(torch.nn.Module):  # what qtuning needs of a model: backbone, output embedding, forward
            base_model_prefix = "backbone"

            def __init__(self, vocab=32, hidden=16):
                super().__init__()
                self.config = Config()
                self.backbone = Backbone(vocab, hidden)
                self.head = torch.nn.Linear(hidden, vocab, bias=False)

            def get_output_embeddings(self):
                return self.head

            def forward(self, input_ids, attention_mask=None, logits_to_keep=0, use_cache=False, **kwargs):
                h = self.backbone(input_ids, attention_mask)[0]
                return self.head(h[:, -logits_to_keep:] if logits_to_keep else h)


        torch.manual_seed(0)
        nll, entropy = torch.rand(8, 10) * 3, torch.rand(8, 10) * 2  # (B, T)
        plan = plan_batch(nll, entropy, torch.ones(8, 10, dtype=torch.bool), QTuningConfig(sample_ratio=0.25))
        assert plan.num_kept == 2, plan.num_kept

        model = TinyLM()
        input_ids = torch.randint(3, 32, (8, 12))
        attention_mask = torch.ones(8, 12, dtype=torch.long)
        attention_mask[4:, 9:] = 0
        labels = torch.where(attention_mask.bool(), input_ids, -100)
        labels[:, :3] = -100  # a prompt
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        tuner = QTuner(QTuningConfig(sample_ratio=0.25, token_ratio=0.5))
        plan = tuner.plan(model, batch)
        kept = tuner.apply(batch, plan)
        loss = tuner.loss(model, kept)
        loss.backward()
        assert plan.num_kept == 2 and kept["input_ids"].shape[0] == 2, plan.num_kept
        assert torch.isfinite(loss) and model.head.weight.grad is not None
        assert qtuning.QTuningTrainingConfig(sample_ratio=0.5).sample_ratio == 0.5  # trl-free settings too
        assert not loaded_blocked(), loaded_blocked()
        print("core ok")
        """,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "core ok" in proc.stdout


def test_the_trainers_and_qtuning_train_name_the_extra_they_need():
    proc = run_without(
        EXTRA_PACKAGES,
        """
        import contextlib, io

        import qtuning
        from qtuning import MissingExtraError
        from qtuning.cli import main

        for name in ("QTuningSFTTrainer", "QTuningSFTConfig"):
            try:
                getattr(qtuning, name)
            except MissingExtraError as exc:
                assert isinstance(exc, ImportError)
                print(name, "->", exc)
            else:
                raise AssertionError(name + " imported without trl")
        try:
            qtuning.QTuningTrainerMixin
        except MissingExtraError as exc:
            print("QTuningTrainerMixin ->", exc)
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = main(["train", "--max_steps", "1"])
        print("train exit", code, "|", err.getvalue().strip())
        """,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 4, lines  # one line each
    assert all('pip install "qtuning[trl]"' in line for line in lines), lines
    assert lines[0].startswith("QTuningSFTTrainer -> QTuningSFTConfig (and QTuningSFTTrainer, `qtuning train`) needs ")
    assert "QTuningTrainerMixin (and QTuningSFTTrainer) needs transformers" in lines[2]
    assert lines[3] == (
        "train exit 1 | qtuning: error: `qtuning train` needs transformers, trl, peft, accelerate, datasets "
        '(not installed): pip install "qtuning[trl]"'
    )


def test_a_missing_trl_alone_is_named():
    """transformers installed, trl not: the mixin works, the SFT trainer names trl."""
    proc = run_without(
        ("trl",),
        """
        import qtuning

        assert qtuning.QTuningTrainerMixin.__name__ == "QTuningTrainerMixin"
        try:
            qtuning.QTuningSFTTrainer
        except qtuning.MissingExtraError as exc:
            print(exc)
        """,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith('needs trl (not installed): pip install "qtuning[trl]"')
