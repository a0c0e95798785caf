"""A deliberately naive re-implementation of docs/algorithm.md sections 3 and 4, for the property tests.

Written from the spec with Python loops, numpy.quantile and plain lists, sharing no code with
`qtuning.engine.selection`, so that the two implementations check each other.
"""

from __future__ import annotations

import math

import numpy as np


def reference_select(ppl, ent, valid, r_s, max_iters=10, tol=0.01, upper=0.49):
    """Returns dict(kept_role, supplemented, quadrant, alpha, iterations, converged) as lists."""
    B = len(ppl)
    pool = [i for i in range(B) if valid[i]]
    n = len(pool)
    role = [0] * B
    supplemented = [False] * B
    quadrant = [0] * B
    if n == 0:
        return dict(
            kept_role=role, supplemented=supplemented, quadrant=quadrant, alpha=0.0, iterations=0, converged=False
        )
    P = np.array([ppl[i] for i in pool], dtype=np.float64)
    E = np.array([ent[i] for i in pool], dtype=np.float64)
    a_lo, a_hi = 0.0, upper
    converged = False
    iterations = 0
    for _ in range(max_iters):
        a = (a_lo + a_hi) / 2
        iterations += 1
        p_hi, p_lo = np.quantile(P, 1 - a), np.quantile(P, a)
        e_lo, e_hi = np.quantile(E, a), np.quantile(E, 1 - a)
        q2 = [i for i in pool if ppl[i] > p_hi and ent[i] <= e_lo]
        q4 = [i for i in pool if ppl[i] <= p_lo and ent[i] > e_hi]
        f = (len(q2) + len(q4)) / n
        last = (a, p_lo, p_hi, e_lo, e_hi, q2, q4)
        if abs(f - r_s) < tol:
            converged = True
            break
        if f < r_s:
            a_lo = a
        else:
            a_hi = a
    a, p_lo, p_hi, e_lo, e_hi, q2, q4 = last
    for i in q2:
        role[i] = 2
    for i in q4:
        role[i] = 4
    K = min(n, max(1, round(r_s * n)))
    kept = len(q2) + len(q4)
    if kept < K:
        pmin, pmax, emin, emax = P.min(), P.max(), E.min(), E.max()
        ph = {i: (ppl[i] - pmin) / (pmax - pmin) if pmax > pmin else 0.0 for i in pool}
        eh = {i: (ent[i] - emin) / (emax - emin) if emax > emin else 0.0 for i in pool}
        rest = [i for i in pool if role[i] == 0]
        rest.sort(key=lambda i: (-max(ph[i] - eh[i], eh[i] - ph[i]), i))
        for i in rest[: K - kept]:
            supplemented[i] = True
            role[i] = 2 if ph[i] >= eh[i] else 4
    p_mid, e_mid = (p_lo + p_hi) / 2, (e_lo + e_hi) / 2
    for i in pool:
        hp, he = ppl[i] > p_mid, ent[i] > e_mid
        quadrant[i] = (1 if he else 2) if hp else (4 if he else 3)
    return dict(
        kept_role=role,
        supplemented=supplemented,
        quadrant=quadrant,
        alpha=a,
        iterations=iterations,
        converged=converged,
    )


def reference_prune(token_ppl, loss_mask, attention_mask, role, r_s, r_t, lam, budget, direction):
    """token_ppl, loss_mask, attention_mask: nested lists (B, T). Returns token_keep as nested lists."""
    B, T = len(loss_mask), len(loss_mask[0])
    keep = [[bool(loss_mask[b][t]) and role[b] != 0 for t in range(T)] for b in range(B)]
    if r_t >= 1:
        return keep

    def p(b, t):
        return token_ppl[b][t] if 0 <= t < T and loss_mask[b][t] else 0.0

    s = {}
    for b in range(B):
        if role[b] != 2:
            continue
        for t in range(T):
            if loss_mask[b][t]:
                s[(b, t)] = (1 - lam) * p(b, t) + lam * (p(b, t - 1) + p(b, t + 1))
    sign = -1 if direction == "high" else 1  # sort so that the ones to prune come first
    if budget == "per_sample":
        for b in range(B):
            cands = [(b, t) for t in range(T) if (b, t) in s]
            if not cands:
                continue
            n_keep = max(1, math.floor(r_t * len(cands)))
            cands.sort(key=lambda bt: (sign * s[bt], bt[1]))
            for bt in cands[: len(cands) - n_keep]:
                keep[bt[0]][bt[1]] = False
    else:
        total = sum(1 for b in range(B) for t in range(T) if attention_mask[b][t])
        target = round(total * r_s * r_t)
        dropped = sum(1 for b in range(B) for t in range(T) if attention_mask[b][t] and role[b] == 0)
        n_prune = min(max(0, total - target - dropped), len(s))
        cands = sorted(s, key=lambda bt: (sign * s[bt], bt[0] * T + bt[1]))
        for bt in cands[:n_prune]:
            keep[bt[0]][bt[1]] = False
    return keep
