"""The code that runs a model: the scoring probe and the loss on kept positions.

Both go through the model's own top-level forward (so DDP, accelerate's autocast and PEFT see a
normal call) with `logits_to_keep=1`, and take the final hidden states from a forward hook on
the backbone. The LM head is then applied only where it is needed: at scored positions (no grad,
fp32, chunked) or at positions that carry a loss (with grad). At SmolLM2's 49k vocabulary the
full (B, T, V) logits would otherwise dominate the time and the memory of a step.
"""

from __future__ import annotations

import contextlib
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from ..engine.scoring import IGNORE_INDEX, TokenScores, shift_labels, shift_mask, token_scores_from_hidden
from ..engine.training_config import QTuningTrainingConfig, resolved_probe_batch_size, resolved_probe_precision
from ..errors import ConfigError, ModelSpecError


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The plain causal LM under DDP/FSDP wrappers and a PEFT wrapper."""
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return model


def backbone_and_head(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(backbone returning last_hidden_state, output embedding module) of a causal LM."""
    inner = unwrap_model(model)
    head = inner.get_output_embeddings()
    backbone = getattr(inner, inner.base_model_prefix, None)
    if head is None or backbone is None or backbone is inner:
        raise ModelSpecError(f"{type(inner).__name__} has no separate backbone and output embedding to score with")
    return backbone, head


def logit_softcap(model: torch.nn.Module) -> float | None:
    """The model's final logit soft-capping (Gemma 2's `final_logit_softcapping`), or None."""
    config = unwrap_model(model).config
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    return getattr(config, "final_logit_softcapping", None)


@contextmanager
def capture_final_hidden(model: torch.nn.Module):
    """Record the backbone's last_hidden_state (B, T, H) during forwards inside the block."""
    backbone, _ = backbone_and_head(model)
    captured: dict[str, torch.Tensor] = {}

    def hook(_module, _args, output):
        captured["hidden"] = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]

    handle = backbone.register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


@contextmanager
def gathered(*params):
    """Whole parameters inside the block.

    DeepSpeed ZeRO-3 leaves each rank only its shard of a weight (an empty tensor) outside the
    module's own forward; the probe reads the LM head's weight directly, so it gathers it first. A
    no-op for ordinary parameters (and for None).
    """
    sharded = [p for p in params if p is not None and hasattr(p, "ds_id")]
    if not sharded:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(sharded, modifier_rank=None):
        yield


def forward_final_hidden(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    position_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """One forward of the model; returns the final hidden states (B, T, H), with grad if enabled.

    A padding-free row: attention_mask None and position_ids (1, L) restarting at 0 per sample.
    """
    extra = {} if position_ids is None else {"position_ids": position_ids}
    with capture_final_hidden(model) as captured:
        # logits_to_keep=1: the head runs on one position per row, the rest is done where needed
        model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=1, use_cache=False, **extra)
    if "hidden" not in captured:
        raise RuntimeError("the backbone's forward hook did not fire: cannot take the final hidden states")
    return captured["hidden"]


@torch.no_grad()
def score_batch(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: torch.Tensor,
    entropy_positions: str = "response",
    chunk_size: int = 512,
    sub_batch_size: int = 0,
) -> tuple[TokenScores, torch.Tensor, torch.Tensor]:
    """The probe: score a batch with the current model, no grad, in eval mode.

    input_ids, attention_mask, labels: (B, T), unshifted. With sub_batch_size > 0 the rows are
    sorted by length and run in groups of that many, each trimmed to its longest row, so that
    little compute goes to padding. Returns the token scores and the loss mask and the attention
    mask on the shifted grid, ready for `plan_batch`.
    """
    was_training = model.training
    # No dropout while scoring, so the same batch always gets the same plan. Switching modes walks
    # every module (costly per step on a GPU), so it is skipped when the model has no dropout at all.
    switch = was_training and has_dropout(model)
    if switch:
        model.eval()
    try:
        hidden = _final_hidden_by_length(model, input_ids, attention_mask, sub_batch_size)  # (B, T, H)
    finally:
        if switch:
            model.train(was_training)
    return scores_from_hidden(model, hidden, attention_mask, labels, entropy_positions, chunk_size)


@dataclass(frozen=True)
class ProbeSettings:
    """How a trainer's probe runs, resolved once for its device: the arguments of every probe call."""

    device: torch.device
    precision: str  # 'bf16' (bf16 autocast for the probe's forward only) or 'same' (as training)
    batch_size: int  # rows per length-sorted group (score_batch's sub_batch_size); 0: the whole batch
    chunk_size: int  # positions per fp32 chunk of the LM head over the vocabulary
    entropy_positions: str  # 'response' or 'all' (QTuningConfig.entropy_positions)

    @classmethod
    def resolve(cls, settings: QTuningTrainingConfig, device: torch.device) -> ProbeSettings:
        """probe_precision and probe_batch_size 'auto' (-1) made concrete for `device`."""
        return cls(
            device=device,
            precision=resolved_probe_precision(settings.probe_precision, device),
            batch_size=resolved_probe_batch_size(settings.probe_batch_size, device),
            chunk_size=settings.score_chunk_size,
            entropy_positions=settings.entropy_positions,
        )

    def score(self, model: torch.nn.Module, batch: dict, *, in_probe_precision: bool = True):
        """`score_batch` on a batch's input_ids, attention_mask, labels (B, T), moved to the device.

        Returns (TokenScores, loss mask, attention) on the shifted grid. in_probe_precision=False runs
        in the training precision (Rho-1's reference model).
        """
        precision = (
            torch.autocast(self.device.type, dtype=torch.bfloat16)
            if in_probe_precision and self.precision == "bf16"
            else contextlib.nullcontext()
        )
        with precision:
            return score_batch(
                model,
                batch["input_ids"].to(self.device),
                batch["attention_mask"].to(self.device),
                batch["labels"].to(self.device),
                self.entropy_positions,
                self.chunk_size,
                self.batch_size,
            )


def has_dropout(model: torch.nn.Module) -> bool:
    """Whether any dropout of the model is active in training mode (cached on the model)."""
    cached = model.__dict__.get("_qtuning_has_dropout")
    if cached is None:
        config = getattr(unwrap_model(model), "config", None)
        in_config = any(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
            for k, v in (config.to_dict().items() if config is not None else ())
            if "dropout" in k
        )
        in_modules = any(isinstance(m, torch.nn.modules.dropout._DropoutNd) and m.p > 0 for m in model.modules())
        cached = model.__dict__["_qtuning_has_dropout"] = in_config or in_modules
    return cached


def _final_hidden_by_length(model, input_ids, attention_mask, sub_batch_size: int) -> torch.Tensor:
    batch, width = input_ids.shape
    if sub_batch_size <= 0 or sub_batch_size >= batch:
        return forward_final_hidden(model, input_ids, attention_mask)
    used = attention_mask.bool()
    ends = torch.where(used.any(dim=1), width - used.flip(1).int().argmax(dim=1), 1)  # (B,) last real token + 1
    order = torch.argsort(ends, descending=True, stable=True)
    hidden = None
    for rows in order.split(sub_batch_size):
        w = int(ends[rows].max())
        part = forward_final_hidden(model, input_ids[rows, :w], attention_mask[rows, :w])  # (b, w, H)
        if hidden is None:
            hidden = part.new_zeros(batch, width, part.shape[-1])
        hidden[rows, :w] = part
    return hidden


@torch.no_grad()
def scores_from_hidden(
    model: torch.nn.Module, hidden, attention_mask, labels, entropy_positions="response", chunk_size=512
):
    """Token scores from final hidden states (B, T, H) already computed: the LM head, no grad, fp32.

    attention_mask, labels: (B, T), unshifted. Returns (TokenScores, loss mask, attention mask), the
    masks on the shifted grid, as `score_batch` does.
    """
    _, head = backbone_and_head(model)
    loss_mask = shift_labels(labels) != IGNORE_INDEX  # (B, T)
    shifted_attention = shift_mask(attention_mask)  # (B, T)
    positions = (shifted_attention | loss_mask) if entropy_positions == "all" else loss_mask
    with gathered(head.weight, getattr(head, "bias", None)):
        scores = token_scores_from_hidden(
            hidden,
            head.weight,
            labels,
            positions=positions,
            lm_head_bias=getattr(head, "bias", None),
            logit_softcap=logit_softcap(model),
            chunk_size=chunk_size,
        )
    return scores, loss_mask, shifted_attention


def head_logits(head, rows: torch.Tensor, softcap: float | None) -> torch.Tensor:
    """(N, H) hidden rows -> (N, V) fp32 logits through the head module (LoRA on the head included)."""
    logits = head(rows.to(head.weight.dtype)).float()
    if softcap is not None:
        logits = softcap * torch.tanh(logits / softcap)
    return logits


def nll_sum(
    model: torch.nn.Module,
    hidden: torch.Tensor,
    targets: torch.Tensor,
    chunk_size: int = 4096,
    row_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sum of cross-entropy over the positions whose target is set, with grad.

    hidden (B, T, H); targets (B, T) on the shifted grid (IGNORE_INDEX where no loss); row_weight
    (B,) optional per-row loss weights (InfoBatch's rescaling), or (B, T) per position (a packed row). Only those
    positions go through the head. Above `chunk_size` positions the head and the loss run in
    checkpointed chunks, so at most (chunk, V) logits are alive at a time.
    """
    _, head = backbone_and_head(model)
    softcap = logit_softcap(model)
    mask = targets != IGNORE_INDEX
    rows, row_targets = hidden[mask], targets[mask]  # (N, H), (N,)
    weights = None
    if row_weight is not None:
        weights = row_weight.to(hidden.device, torch.float32)
        weights = (weights if weights.dim() == 2 else weights.unsqueeze(1).expand(mask.shape))[mask]  # (N,)
    if rows.shape[0] == 0:
        # Nothing to learn here, but every parameter (an untied head too) must still get a gradient,
        # zero, so that DDP's reducer and FSDP's collectives run as on every other rank.
        return head_logits(head, hidden[:, :1].flatten(0, 1), softcap).sum() * 0.0 + hidden.sum() * 0.0

    def chunk_loss(r, t, w=None):
        if w is None:
            return F.cross_entropy(head_logits(head, r, softcap), t, reduction="sum")
        return (F.cross_entropy(head_logits(head, r, softcap), t, reduction="none") * w).sum()

    if chunk_size <= 0 or rows.shape[0] <= chunk_size:
        return chunk_loss(rows, row_targets, weights)
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, rows.shape[0], chunk_size):
        end = start + chunk_size
        w = None if weights is None else weights[start:end]
        total = total + checkpoint(chunk_loss, rows[start:end], row_targets[start:end], w, use_reentrant=False)
    return total


def _vocab_size(inner) -> int:
    weight = inner.get_output_embeddings().weight
    return int(getattr(weight, "ds_shape", weight.shape)[0])  # ZeRO-3: the full shape of a sharded weight


@torch.no_grad()
def check_head_path(model: torch.nn.Module, vocab_size: int | None = None, atol: float = 1e-3) -> None:
    """Refuse a model whose logits are not head(final hidden) (+ softcap): our fast path would be wrong."""
    inner = unwrap_model(model)
    device = next(inner.parameters()).device
    vocab = vocab_size or _vocab_size(inner)
    ids = torch.arange(1, 9, device=device).remainder(vocab).unsqueeze(0)  # (1, 8)
    attention = torch.ones_like(ids)
    was_training = model.training
    model.eval()
    try:
        full = model(input_ids=ids, attention_mask=attention, use_cache=False).logits  # (1, 8, V)
        if full is None or full.dim() != 3 or full.shape[:2] != ids.shape or full.shape[-1] < vocab:
            # Unsloth's models return empty logits unless UNSLOTH_RETURN_LOGITS=1 (docs/integrations.md)
            shape = None if full is None else tuple(full.shape)
            raise ModelSpecError(
                f"{type(inner).__name__} returned no usable logits (shape {shape}, expected (1, 8, {vocab})); "
                "with Unsloth, set UNSLOTH_RETURN_LOGITS=1 in the environment before importing it"
            )
        full = full.float()
        hidden = forward_final_hidden(model, ids, attention)
    finally:
        model.train(was_training)
    _, head = backbone_and_head(model)
    ours = head_logits(head, hidden[0], logit_softcap(model))
    error = (ours - full[0]).abs().max().item()
    if not error <= atol * max(1.0, full.abs().max().item()):
        raise ModelSpecError(
            f"{type(inner).__name__}: logits differ from head(final hidden states) by {error:.3g}; this model "
            "transforms its logits in a way qtuning does not reproduce (e.g. a logit scale)."
        )


@torch.no_grad()
def check_packed_attention(model: torch.nn.Module, atol: float = 1e-4) -> None:
    """Refuse padding-free training where the attention does not keep packed samples apart.

    Two samples end to end, position_ids restarting at 0, must give each the hidden states it gets alone.
    """
    inner = unwrap_model(model)
    device = next(inner.parameters()).device
    vocab = _vocab_size(inner)
    first = torch.arange(3, 8, device=device).remainder(vocab).unsqueeze(0)  # (1, 5)
    second = torch.arange(11, 15, device=device).remainder(vocab).unsqueeze(0)  # (1, 4)
    was_training = model.training
    model.eval()
    try:
        alone = [forward_final_hidden(model, ids, torch.ones_like(ids)).float() for ids in (first, second)]
        positions = torch.cat([torch.arange(5), torch.arange(4)]).unsqueeze(0).to(device)
        together = forward_final_hidden(model, torch.cat([first, second], dim=1), None, positions).float()
    finally:
        model.train(was_training)
    error = (together - torch.cat(alone, dim=1)).abs().max().item()
    if not error <= atol * max(1.0, torch.cat(alone, dim=1).abs().max().item()):
        implementation = getattr(inner.config, "_attn_implementation", None)
        raise ConfigError(
            f"padding_free=True: {type(inner).__name__} with attn_implementation={implementation!r} does not keep "
            f"packed samples apart (hidden states differ by {error:.3g} from each sample run alone). Use an "
            "attention implementation that reads position_ids (sdpa, eager or flash_attention_2 in recent "
            "transformers), or set padding_free: false."
        )
