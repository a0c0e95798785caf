"""The `native` engine: the same prompts and metrics as lm_eval; each ARC prompt runs once and its choices are
scored off the shared KV cache; generation is `model.generate`."""

from __future__ import annotations

import inspect
import time

from .metrics import choice_accuracy, score_generation
from .tasks import TASKS


def render_prompt(tokenizer, text: str) -> str:
    """The user turn rendered as training renders a prompt: chat template plus the generation prompt."""
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
    )


def _encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _batches(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _cache_keyword(decoder) -> str:
    """The forward keyword for a KV cache: `cache` since transformers 5.x deprecated `past_key_values`
    (a FutureWarning on every call), `past_key_values` before."""
    return "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"


def choice_loglikelihoods(
    model, tokenizer, docs: list[dict], batch_size: int = 8, progress: bool = True, desc: str = "log-likelihood"
) -> list[list[float]]:
    """Per document, the summed log-probability of each choice's tokens after the chat-rendered
    eval_prompt. The continuation tokens are those of tokenize(context + choice) past the context's
    length (lm_eval's split). The prompt runs once per document (its KV cache is shared by the
    choices) and the LM head runs only where a choice token is scored."""
    import torch
    from tqdm import tqdm

    decoder, head = model.get_decoder(), model.get_output_embeddings()
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id
    prepared = []
    for doc in docs:
        context = render_prompt(tokenizer, doc["eval_prompt"])
        ctx = _encode(tokenizer, context)
        conts = []
        for choice in doc["choices"]:
            cont = _encode(tokenizer, context + choice)[len(ctx) :]
            conts.append(cont or [pad])  # an empty choice scores its first token after the prompt
        prepared.append((ctx, conts))
    order = sorted(range(len(docs)), key=lambda i: -len(prepared[i][0]))  # similar lengths together
    results: list[list[float] | None] = [None] * len(docs)
    bar = tqdm(total=len(docs), desc=desc, unit="doc", disable=not progress)
    for group in _batches(order, batch_size):
        prefixes = [prepared[i][0] for i in group]
        width = max(map(len, prefixes))
        ids = torch.full((len(group), width), pad, dtype=torch.long)
        mask = torch.zeros((len(group), width), dtype=torch.long)
        for row, prefix in enumerate(prefixes):  # left padding: every prompt ends at the last column
            ids[row, width - len(prefix) :] = torch.tensor(prefix)
            mask[row, width - len(prefix) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = decoder(
            input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device), use_cache=True
        )
        first = torch.log_softmax(head(out.last_hidden_state[:, -1]).float(), dim=-1)  # (D, V)
        owner = [row for row, i in enumerate(group) for _ in prepared[i][1]]
        conts = [cont for i in group for cont in prepared[i][1]]
        cache = out.past_key_values
        cache.reorder_cache(torch.tensor(owner, device=device))
        c_width = max(map(len, conts))
        c_ids = torch.full((len(conts), c_width), pad, dtype=torch.long)
        c_mask = torch.zeros((len(conts), c_width), dtype=torch.long)
        for row, cont in enumerate(conts):
            c_ids[row, : len(cont)] = torch.tensor(cont)
            c_mask[row, : len(cont)] = 1
        lengths = mask.sum(-1)[owner]
        out = decoder(
            input_ids=c_ids.to(device),
            attention_mask=torch.cat([mask[owner], c_mask], -1).to(device),
            position_ids=(lengths[:, None] + torch.arange(c_width)[None]).to(device),
            use_cache=True,
            **{_cache_keyword(decoder): cache},
        )
        lls = first[owner, c_ids[:, 0]].double()
        rows, cols = (c_mask[:, 1:] == 1).nonzero(as_tuple=True)  # token j+1 is scored from position j
        if len(rows):
            logp = torch.log_softmax(head(out.last_hidden_state[rows, cols]).float(), dim=-1)
            picked = logp.gather(-1, c_ids[rows, cols + 1].to(device)[:, None])[:, 0].double().cpu()
            lls = lls.cpu().index_add(0, rows, picked)
        lls = lls.cpu().tolist()
        start = 0
        for i in group:
            n = len(prepared[i][1])
            results[i] = lls[start : start + n]
            start += n
        bar.update(len(group))
    bar.close()
    return results


def generate_responses(
    model,
    tokenizer,
    prompts: list[str],
    max_new_tokens: int,
    batch_size: int = 8,
    progress: bool = True,
    desc: str = "generate",
) -> list[str]:
    """Greedy responses to chat-rendered prompts, batched (left padding, longest first), each
    stopping at the end of its turn."""
    import torch
    from tqdm import tqdm

    device = next(model.parameters()).device
    encoded = [_encode(tokenizer, render_prompt(tokenizer, p)) for p in prompts]
    stops = {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")} - {None, tokenizer.unk_token_id}
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
    out_texts: list[str] = [""] * len(prompts)
    bar = tqdm(total=len(prompts), desc=desc, unit="doc", disable=not progress)
    for group in _batches(order, batch_size):
        width = max(len(encoded[i]) for i in group)
        ids = torch.full((len(group), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(group), width), dtype=torch.long)
        for row, i in enumerate(group):
            ids[row, width - len(encoded[i]) :] = torch.tensor(encoded[i])
            mask[row, width - len(encoded[i]) :] = 1
        generated = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            eos_token_id=sorted(stops),
            pad_token_id=tokenizer.pad_token_id,
            temperature=None,
            top_p=None,
            top_k=None,
        )
        for row, i in enumerate(group):
            out_texts[i] = tokenizer.decode(generated[row, width:], skip_special_tokens=True)
        bar.update(len(group))
    bar.close()
    return out_texts


def response_nll(
    model, tokenizer, records: list[dict], batch_size: int = 16, progress: bool = False, desc: str = "nll"
) -> list[tuple[float, int]]:
    """Per record, (summed NLL, token count) of its reference `response` after its `prompt`, as
    training tokenises them (chat template, loss on the response tokens only); fp32 log-softmax over
    the full vocabulary, no pruning. The held-out NLL of a set is sum(NLL) / sum(tokens). A record
    may instead hold `prompt` and `completion` as message lists (a normalised training record, e.g.
    a multi-turn conversation, whose assistant turns are scored as training scores them)."""
    import torch
    from tqdm import tqdm

    from ..data import tokenize_record
    from ..engine.scoring import IGNORE_INDEX
    from ..modeling.probe import score_batch

    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    encoded = [
        tokenize_record(
            tokenizer,
            {"prompt": r["prompt"], "completion": r["completion"]}
            if "completion" in r
            else {
                "prompt": [{"role": "user", "content": r["prompt"]}],
                "completion": [{"role": "assistant", "content": r["response"]}],
            },
            None,
        )
        for r in records
    ]
    out: list[tuple[float, int]] = [(0.0, 0)] * len(records)
    order = sorted(range(len(records)), key=lambda i: -len(encoded[i]["input_ids"]))
    was_training = model.training
    model.eval()
    bar = tqdm(total=len(records), desc=desc, unit="doc", disable=not progress)
    try:
        with torch.inference_mode():
            for group in _batches(order, batch_size):
                width = max(len(encoded[i]["input_ids"]) for i in group)
                ids = torch.full((len(group), width), pad, dtype=torch.long)
                labels = torch.full((len(group), width), IGNORE_INDEX, dtype=torch.long)
                mask = torch.zeros((len(group), width), dtype=torch.long)
                for row, i in enumerate(group):  # right padding, as in training
                    n = len(encoded[i]["input_ids"])
                    ids[row, :n] = torch.tensor(encoded[i]["input_ids"])
                    labels[row, :n] = torch.tensor(encoded[i]["labels"])
                    mask[row, :n] = 1
                scores, loss_mask, _ = score_batch(model, ids.to(device), mask.to(device), labels.to(device))
                nll = torch.where(loss_mask, scores.nll, 0.0).sum(dim=1)  # (B,)
                for row, i in enumerate(group):
                    out[i] = (float(nll[row]), int(loss_mask[row].sum()))
                bar.update(len(group))
    finally:
        bar.close()
        model.train(was_training)
    return out


def _native_run(
    model, tokenizer, docs: dict[str, list[dict]], batch_size: int, progress: bool, keep_samples: bool
) -> tuple[dict, dict]:
    import math

    timings, results, samples = {}, {}, {}
    for task, task_docs_ in docs.items():
        started = time.perf_counter()
        spec = TASKS[task]
        if spec.kind == "nll":  # a ratio of sums: the set's NLL is its summed NLL over its response tokens
            pairs = response_nll(model, tokenizer, task_docs_, batch_size, progress, desc=task)
            tokens = sum(t for _, t in pairs)
            timings[task] = time.perf_counter() - started
            results[task] = {"nll": sum(v for v, _ in pairs) / max(1, tokens), "nll_tokens": tokens, "n": len(pairs)}
            if keep_samples:  # per item: the summed NLL and its token count (`qtuning compare` reads both)
                samples[task] = [{"id": d["id"], "nll": v, "nll_tokens": t} for d, (v, t) in zip(task_docs_, pairs)]
            continue
        if spec.kind == "choice":
            lls = choice_loglikelihoods(model, tokenizer, task_docs_, batch_size, progress, desc=task)
            scores = [choice_accuracy(ll, d["choices"], d["gold"]) for ll, d in zip(lls, task_docs_)]
            outputs = lls
        else:
            outputs = generate_responses(
                model,
                tokenizer,
                [d["eval_prompt"] for d in task_docs_],
                spec.max_new_tokens,
                batch_size,
                progress,
                desc=task,
            )
            scores = [score_generation(task, text, d) for text, d in zip(outputs, task_docs_)]
        timings[task] = time.perf_counter() - started
        n = len(scores)
        row = {}
        for metric in spec.metrics:
            values = [s[metric] for s in scores]
            mean = sum(values) / n
            row[metric] = mean
            if n > 1:  # the standard error of the mean, as lm_eval reports it
                row[f"{metric}_stderr"] = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)
        row["n"] = n
        results[task] = row
        if keep_samples:
            samples[task] = [{"id": d["id"], "output": o, **s} for d, o, s in zip(task_docs_, outputs, scores)]
    return results, {"timings": timings, "samples": samples}
