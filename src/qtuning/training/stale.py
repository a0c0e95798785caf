"""`scoring: stale`: select with the scores a row got when it was last seen; re-probe only a fraction.

From the second epoch on, every row of a batch has been scored before: by the probe, the last time
it was drawn, or, if it was kept, by its own training forward (whose final hidden states give the
NLL and entropy at every response position for the price of the LM head alone, no second pass
through the model). Those scores are up to one epoch old. `ScoreCache` keeps them per dataset row
id; each step probes only the rows it holds no scores for plus a seeded random share of the others
(`stale_reprobe_fraction`), and the selection reads the cached scores for the rest. The selection
math is unchanged: it receives the same (B, T) token grids a probe would give.

Pure torch. A row's scores are stored at its non-pad positions of the shifted grid (attention or
loss), in order, so they fit any batch the row lands in later (any padding width); a row whose
position count has changed (another tokenizer or max_length) counts as unscored.
"""

from __future__ import annotations

import torch


class ScoreCache:
    """Per-row token scores: id -> (token NLL (n,), token entropy (n,), the step that scored it)."""

    def __init__(self) -> None:
        self._rows: dict[int, tuple[torch.Tensor, torch.Tensor, int]] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, row_id: int) -> bool:
        return int(row_id) in self._rows

    def put(
        self,
        ids: list[int],
        token_nll: torch.Tensor,
        token_entropy: torch.Tensor,
        positions: torch.Tensor,
        step: int,
    ) -> None:
        """Store rows' scores. token_nll, token_entropy: float (B, T); positions: bool (B, T), the
        row's non-pad positions on the shifted grid; ids: B dataset row ids."""
        nll, entropy, positions = token_nll.detach().cpu(), token_entropy.detach().cpu(), positions.cpu().bool()
        for b, row_id in enumerate(ids):
            where = positions[b]
            self._rows[int(row_id)] = (nll[b][where].float().clone(), entropy[b][where].float().clone(), int(step))

    def lookup(self, ids: list[int], positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(token NLL (B, T) float64, token entropy (B, T) float64, have (B,) bool): the cached rows'
        scores placed at their positions (0 elsewhere, and in rows without usable scores)."""
        positions = positions.cpu().bool()
        nll = torch.zeros(positions.shape, dtype=torch.float64)
        entropy = torch.zeros(positions.shape, dtype=torch.float64)
        have = torch.zeros(len(ids), dtype=torch.bool)
        for b, row_id in enumerate(ids):
            stored = self._rows.get(int(row_id))
            if stored is None or stored[0].numel() != int(positions[b].sum()):
                continue
            nll[b, positions[b]] = stored[0].double()
            entropy[b, positions[b]] = stored[1].double()
            have[b] = True
        return nll, entropy, have

    def age(self, ids: list[int], step: int) -> list[int | None]:
        """Steps since each row was scored (None: never)."""
        return [None if int(i) not in self._rows else step - self._rows[int(i)][2] for i in ids]

    def state_dict(self) -> dict[str, torch.Tensor]:
        ids = sorted(self._rows)
        lengths = [self._rows[i][0].numel() for i in ids]
        return {
            "ids": torch.tensor(ids, dtype=torch.long),
            "lengths": torch.tensor(lengths, dtype=torch.long),
            "steps": torch.tensor([self._rows[i][2] for i in ids], dtype=torch.long),
            "nll": torch.cat([self._rows[i][0] for i in ids]) if ids else torch.zeros(0),
            "entropy": torch.cat([self._rows[i][1] for i in ids]) if ids else torch.zeros(0),
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> ScoreCache:
        cache = cls()
        lengths = state["lengths"].tolist()
        for row_id, step, nll, entropy in zip(
            state["ids"].tolist(), state["steps"].tolist(), state["nll"].split(lengths), state["entropy"].split(lengths)
        ):
            cache._rows[row_id] = (nll.clone(), entropy.clone(), step)
        return cache


def rows_to_probe(have: torch.Tensor, fraction: float, generator: torch.Generator) -> torch.Tensor:
    """(B,) bool: every row without cached scores, plus round(fraction x cached rows) of the cached
    ones drawn uniformly with `generator` (so stale scores cannot stay stale forever)."""
    probe = ~have
    cached = have.nonzero().flatten()
    count = int(round(fraction * cached.numel()))
    if count:
        pick = cached[torch.randperm(cached.numel(), generator=generator)[:count]]
        probe[pick] = True
    return probe
