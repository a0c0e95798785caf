"""qtuning.evaluation: metric functions against hand-computed values, the lm_eval engine end to end on
a tiny hand-built model (planted perfect cases), and one small run on the real SmolLM2."""

import json
import math
import warnings

import pytest
import torch

from qtuning.errors import DataError
from qtuning.evaluation import (
    EvalError,
    choice_accuracy,
    evaluate,
    exact_match_score,
    extract_gsm8k_answer,
    f1_score,
    first_line,
    format_table,
    last_boxed,
    math_equal,
    math_gold,
    normalize_answer,
    normalize_math_answer,
    parse_task_args,
    prepare_doc,
)
from tests.helpers import tiny_llama, tiny_tokenizer

# ------------------------------------------------------------------------------------- metrics


def test_squad_normalisation():
    assert normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert normalize_answer("An apple, a pear and THE plum.") == "apple pear and plum"
    assert normalize_answer("  theatre ") == "theatre"  # "the" only as a whole word
    assert normalize_answer("") == ""


def test_exact_match_and_f1_hand_computed():
    assert exact_match_score("the Denver Broncos", ["Denver Broncos", "Broncos"]) == 1.0
    assert exact_match_score("Denver", ["Denver Broncos"]) == 0.0
    # pred {denver}, gold {denver, broncos}: P 1, R 1/2, F1 2/3
    assert f1_score("Denver", ["Denver Broncos"]) == pytest.approx(2 / 3)
    # max over answers: "broncos" matches the second answer exactly
    assert f1_score("Broncos", ["Denver Broncos", "Broncos"]) == pytest.approx(1.0)
    # pred {a1 b c}, gold {b c d e}: 2 common, P 2/3, R 2/4 -> F1 = 2*(2/3)(1/2)/(2/3+1/2) = 4/7
    assert f1_score("x b c", ["b c d e"]) == pytest.approx(4 / 7)
    assert f1_score("nothing", ["else"]) == 0.0
    assert f1_score("", ["else"]) == 0.0
    assert first_line("\n  Paris\nbecause ...") == "Paris"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("She sells 9 eggs.\n#### 18", "18"),
        ("#### 1,234", "1234"),
        ("The answer is $1,000.00.", "1000"),
        ("So 3 + 4 = 7, then 7 * 2 = 14.", "14"),
        ("It went down to -5 degrees", "-5"),
        ("half: 0.5", "0.5"),
        ("#### 12\nthen 99 more", "12"),
        ("no number here", None),
    ],
)
def test_gsm8k_number_extraction(text, expected):
    assert extract_gsm8k_answer(text) == expected


def test_boxed_extraction_nested_braces():
    assert last_boxed(r"so $\boxed{5}$.") == "5"
    assert last_boxed(r"first \boxed{1} then \boxed{\frac{1}{\sqrt{2}}}") == r"\frac{1}{\sqrt{2}}"
    assert last_boxed(r"\boxed{\{1, 2\}}") == r"\{1, 2\}"
    assert last_boxed(r"\fbox{x^{2}}") == "x^{2}"
    assert last_boxed(r"\boxed 7$") == "7"
    assert last_boxed(r"\boxed{unclosed") is None
    assert last_boxed("no box") is None


def test_math_normalisation_and_gold():
    assert math_equal(r"\dfrac{1}{2}", r"\frac12")
    assert math_equal("0.5", r"\frac{1}{2}")
    assert math_equal("x = 3", "3")
    assert math_equal(r"90^\circ", "90")
    assert math_equal(r"\left( 1, 2 \right)", "(1,2)")
    assert math_equal("3/4", r"\frac{3}{4}")
    assert math_equal(r"5\text{ cm}", "5")
    assert not math_equal("4", "3")
    assert not math_equal(None, "3")
    assert normalize_math_answer(r"\sqrt2") == r"\sqrt{2}"
    # the gold is the last \boxed{} of the solution, not oe-eval's (sometimes broken) answer field
    record = {"id": "x", "prompt": "p", "response": r"... so $\boxed{(-\infty, 2]}$.", "answer": r"(-\iny,2]"}
    assert math_gold(record) == r"(-\infty, 2]"
    assert math_gold({"id": "y", "response": "no box", "answer": "7"}) == "7"


def test_acc_vs_acc_norm_constructed():
    # ll: "a" -2.0 (1 byte: -2.0/byte), "bbbbbbbbbb" -5.0 (10 bytes: -0.5/byte), "cc" -4.0 (-2.0/byte)
    lls, choices = [-2.0, -5.0, -4.0], ["a", "bbbbbbbbbb", "cc"]
    assert choice_accuracy(lls, choices, gold=0) == {"acc": 1.0, "acc_norm": 0.0}
    assert choice_accuracy(lls, choices, gold=1) == {"acc": 0.0, "acc_norm": 1.0}
    assert choice_accuracy(lls, choices, gold=2) == {"acc": 0.0, "acc_norm": 0.0}


def test_task_arguments(tmp_path):
    path = tmp_path / "held.jsonl"
    path.write_text(json.dumps({"id": "1", "prompt": "Q?", "response": "A", "answers": ["A", "a1"]}) + "\n")
    tasks, records = parse_task_args(f"arc-easy, squad={path}")
    assert tasks == ["arc_easy", "squad"] and records["squad"][0]["answers"] == ["A", "a1"]
    with pytest.raises(EvalError, match="did you mean squad"):
        parse_task_args("squda")
    arc = {
        "id": "a",
        "prompt": "Why?\n\nA. x\nB. y\n\nAnswer with the letter of the correct choice.",
        "choices": ["x", "y"],
        "gold": 1,
    }
    assert prepare_doc("arc_easy", arc) == {"id": "a", "eval_prompt": "Why?", "choices": ["x", "y"], "gold": 1}
    assert prepare_doc("gsm8k", {"id": "g", "prompt": "p", "response": "...\n#### 1,200"})["answers"] == ["1200"]


# --------------------------------------------------------------------------- the engine, end to end

ANSWER = r"\boxed{42}"


@pytest.fixture(scope="module")
def bigram_model():
    """A tiny Llama whose attention and MLP write nothing, so the next token depends on the current
    token only; its head is set so that greedy decoding after the assistant header says ANSWER."""
    tokenizer = tiny_tokenizer()
    model = tiny_llama(vocab_size=len(tokenizer), hidden=32, tie=False, seed=0)
    header = tokenizer.apply_chat_template(
        [{"role": "user", "content": "x"}], tokenize=False, add_generation_prompt=True
    )
    last = tokenizer(header, add_special_tokens=False)["input_ids"][-1]
    chain = [
        last,
        *tokenizer(ANSWER, add_special_tokens=False)["input_ids"],
        tokenizer.convert_tokens_to_ids("<|im_end|>"),
    ]
    assert len(set(chain)) == len(chain)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        emb = model.model.embed_tokens.weight
        head = model.lm_head.weight
        head.normal_(0, 0.01)
        for cur, nxt in zip(chain, chain[1:]):
            head[nxt] += 2.0 * emb[cur] / emb[cur].norm()
    return model.eval(), tokenizer


def _hand_choice_lls(model, tokenizer, question, choices):
    """Sum of log p(choice tokens | chat-rendered question), by direct forward passes."""
    context = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
    )
    ctx_ids = tokenizer(context, add_special_tokens=False)["input_ids"]
    out = []
    for choice in choices:
        ids = tokenizer(context + choice, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
        out.append(sum(float(logp[i - 1, ids[i]]) for i in range(len(ctx_ids), len(ids))))
    return out


@pytest.mark.parametrize("engine", ["lm_eval", "native"])
def test_end_to_end_planted_perfect_cases(bigram_model, engine):
    model, tokenizer = bigram_model
    arc = []
    for i, (q, choices) in enumerate(
        [
            ("Which is a planet?", ["Mars", "a very long table of stones", "Sun"]),
            ("What melts ice?", ["heat", "cold air", "nothing at all", "a rock"]),
            ("Pick one.", ["yes", "no"]),
        ]
    ):
        lls = _hand_choice_lls(model, tokenizer, q, choices)
        gold = max(range(len(choices)), key=lls.__getitem__)
        norm_best = max(range(len(choices)), key=lambda j: lls[j] / len(choices[j].encode()))
        prompt = q + "\n\n" + "\n".join(f"{'ABCD'[j]}. {c}" for j, c in enumerate(choices)) + "\n\nAnswer."
        arc.append(
            {
                "id": str(i),
                "prompt": prompt,
                "response": "",
                "choices": choices,
                "gold": gold,
                "_norm_hit": float(norm_best == gold),
            }
        )
    expected_norm = sum(r["_norm_hit"] for r in arc) / len(arc)
    qa = [
        {"id": "q1", "prompt": "Who?", "response": "x", "answers": ["nobody", ANSWER]},
        {"id": "q2", "prompt": "Where?", "response": "x", "answers": ["boxed 41"]},
    ]  # F1 0: "boxed41"
    gsm = [
        {"id": "g1", "prompt": "How many?", "response": "#### 42", "answer": "42"},
        {"id": "g2", "prompt": "How many more?", "response": "#### 43", "answer": "43"},
    ]
    maths = [{"id": "m1", "prompt": "Solve.", "response": r"so $\boxed{42}$", "answer": "42"}]
    result = evaluate(
        model,
        tokenizer,
        ["arc_easy", "squad", "triviaqa", "gsm8k", "math"],
        records={"arc_easy": arc, "squad": qa, "triviaqa": qa[:1], "gsm8k": gsm, "math": maths},
        batch_size=2,
        max_length=1024,
        progress=False,
        engine=engine,
    )
    tasks = result["tasks"]
    assert tasks["arc_easy"]["n"] == 3 and tasks["arc_easy"]["acc"] == 1.0
    assert tasks["arc_easy"]["acc_norm"] == pytest.approx(expected_norm)
    assert tasks["squad"] == {
        "exact_match": 0.5,
        "exact_match_stderr": pytest.approx(0.5),
        "f1": 0.5,
        "f1_stderr": pytest.approx(0.5),
        "n": 2,
    }
    assert tasks["triviaqa"]["exact_match"] == 1.0 and tasks["triviaqa"]["f1"] == 1.0
    assert tasks["gsm8k"]["exact_match"] == 0.5 and tasks["gsm8k"]["n"] == 2
    assert tasks["math"]["exact_match"] == 1.0 and tasks["math"]["n"] == 1
    assert result["config"]["records"]["squad"] == "custom" and result["config"]["engine"] == engine
    assert set(result["timing"]) >= {"total_s", "arc_easy_s", "math_s"}
    table = format_table(result)
    assert "arc_easy" in table and "1.0000" in table
    json.dumps(result)  # serialisable


NLL_RECORDS = [
    {"id": "n1", "prompt": "Calculate 1 + 2.", "response": "Step 1: 1 + 2 = 3\nAnswer: 3"},
    {"id": "n2", "prompt": "Hi", "response": "Hello there, how can I help you today?"},
    {"id": "n3", "prompt": "A much longer prompt than the others, with several words in it.", "response": "Yes."},
]


@pytest.mark.parametrize("engine", ["lm_eval", "native"])
def test_nll_task_is_the_token_weighted_response_nll_under_either_engine(bigram_model, engine):
    """`nll=FILE`: the set's NLL is summed NLL / summed response tokens (response_nll, which
    tests/test_evidence.py checks against the model's own loss), each item's sum and count kept for
    `qtuning compare`; under lm_eval it runs natively beside the harness's tasks, in the given order."""
    from qtuning.evaluation import response_nll

    model, tokenizer = bigram_model
    pairs = response_nll(model, tokenizer, NLL_RECORDS, batch_size=3)
    expected = sum(v for v, _ in pairs) / sum(t for _, t in pairs)
    result = evaluate(
        model,
        tokenizer,
        ["nll", "squad"],
        records={"nll": NLL_RECORDS, "squad": [{"id": "q1", "prompt": "Who?", "response": "x", "answers": [ANSWER]}]},
        batch_size=2,
        progress=False,
        engine=engine,
        samples=True,
    )
    assert list(result["tasks"]) == ["nll", "squad"]
    row = result["tasks"]["nll"]
    assert row["nll"] == pytest.approx(expected, rel=1e-5) and row["n"] == 3
    assert row["nll_tokens"] == sum(t for _, t in pairs) and expected > 0
    assert result["tasks"]["squad"]["exact_match"] == 1.0  # the harness (or native) task still ran
    items = result["samples"]["nll"]
    assert [i["id"] for i in items] == ["n1", "n2", "n3"]
    for item, (v, t) in zip(items, pairs):
        assert item["nll"] == pytest.approx(v, rel=1e-5) and item["nll_tokens"] == t
    assert "nll" in format_table(result) and f"{row['nll']:.4f}" in format_table(result)


def test_nll_task_errors_name_the_record_and_field(bigram_model):
    model, tokenizer = bigram_model
    with pytest.raises(EvalError, match="task nll scores your own records: give them as nll=path.jsonl"):
        evaluate(model, tokenizer, ["nll"], progress=False)
    bad = [{"id": "n1", "prompt": "Hi", "response": "ok"}, {"id": "n7", "prompt": "Hi", "response": " "}]
    with pytest.raises(EvalError, match=r"nll records: row 1 \(id 'n7'\): the response is empty"):
        evaluate(model, tokenizer, ["nll"], records={"nll": bad}, progress=False)
    with pytest.raises(DataError, match="nll records: row 0: unrecognised row format with fields"):
        evaluate(model, tokenizer, ["nll"], records={"nll": [{"id": "n2", "response": "ok"}]}, progress=False)


def test_nll_task_reads_every_training_row_format_alike(bigram_model, tmp_path):
    """Alpaca, prompt + completion, messages and the built-in prompt + response: the same conversation,
    the same NLL; a file's bad row is named with the file."""
    from qtuning.evaluation import parse_task_args

    model, tokenizer = bigram_model
    forms = [
        {"id": "a", "instruction": "Say hi.", "input": "", "output": "Hello there."},
        {"id": "b", "prompt": "Say hi.", "completion": "Hello there."},
        {
            "id": "c",
            "messages": [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hello there."}],
        },
        {"id": "d", "prompt": "Say hi.", "response": "Hello there."},
    ]
    result = evaluate(model, tokenizer, ["nll"], records={"nll": forms}, progress=False, engine="native", samples=True)
    items = result["samples"]["nll"]
    assert [i["id"] for i in items] == ["a", "b", "c", "d"]
    assert len({round(i["nll"], 5) for i in items}) == 1 and len({i["nll_tokens"] for i in items}) == 1
    path = tmp_path / "held.jsonl"
    path.write_text(json.dumps(forms[0]) + "\n" + json.dumps({"id": "x", "text": "no response"}) + "\n")
    with pytest.raises(DataError, match=f"{path}: row 1: unrecognised row format with fields"):
        parse_task_args(f"nll={path}")


def test_records_for_unlisted_task_is_an_error(bigram_model):
    model, tokenizer = bigram_model
    with pytest.raises(EvalError, match="not evaluated"):
        evaluate(model, tokenizer, ["squad"], records={"gsm8k": []})


# ---------------------------------------------------------------------------------- real model


@pytest.mark.real_model
def test_real_model_small_eval():
    from qtuning.evaluation import load_for_eval

    model, tokenizer = load_for_eval("smollm2-135m-instruct")
    # SQuAD's long passages cost most, so few records; the native engine, then lm_eval on ARC alike
    result = evaluate(model, tokenizer, ["arc_easy", "squad"], limit=4, batch_size=4, engine="native")
    arc, squad = result["tasks"]["arc_easy"], result["tasks"]["squad"]
    assert arc["n"] == 4 and squad["n"] == 4
    for value in (arc["acc"], arc["acc_norm"], squad["exact_match"], squad["f1"]):
        assert 0.0 <= value <= 1.0 and not math.isnan(value)
    assert squad["f1"] >= squad["exact_match"]
    assert squad["f1"] > 0.0  # SmolLM2 copies some words of the passage (first 4: F1 0.196)
    harness = evaluate(model, tokenizer, ["arc_easy"], limit=4, batch_size=4, engine="lm_eval")
    assert harness["tasks"]["arc_easy"]["acc"] == arc["acc"]
    assert harness["tasks"]["arc_easy"]["acc_norm"] == arc["acc_norm"]
    # the held-out NLL of 4 real arith worked solutions, beside lm_eval's task: summed NLL / response tokens
    from qtuning.data.builtin import load_builtin_records
    from qtuning.evaluation import response_nll

    rows = load_builtin_records("arith-steps")[4000:4004]
    pairs = response_nll(model, tokenizer, rows)
    both = evaluate(model, tokenizer, ["arc_easy", "nll"], limit=4, records={"nll": rows}, engine="lm_eval")
    nll = both["tasks"]["nll"]
    assert nll["nll_tokens"] == sum(t for _, t in pairs) > 4 * 20  # worked solutions: dozens of tokens each
    assert nll["nll"] == pytest.approx(sum(v for v, _ in pairs) / nll["nll_tokens"], rel=1e-5)
    assert 0.0 < nll["nll"] < 5.0 and both["tasks"]["arc_easy"]["acc"] == arc["acc"]


def test_lora_adapter_folder_is_merged(tmp_path):
    """A LoRA output_dir (adapter_config.json, no config.json) loads on its base model, merged."""
    from peft import LoraConfig, get_peft_model

    from qtuning.evaluation import load_for_eval

    tokenizer = tiny_tokenizer()
    base = tiny_llama(vocab_size=len(tokenizer), hidden=32, seed=1)
    base.save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tmp_path / "base")  # as qtuning train loads it: by path
    peft_model = get_peft_model(
        base,
        LoraConfig(
            r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False, task_type="CAUSAL_LM"
        ),
    )
    peft_model.save_pretrained(tmp_path / "run")
    tokenizer.save_pretrained(tmp_path / "run")
    x = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        expected = peft_model(x).logits
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model, loaded_tokenizer = load_for_eval(tmp_path / "run")
        # peft asks transformers a deprecated question while it loads: not the user's business
        assert not [w for w in caught if "is_gradient_checkpointing" in str(w.message)]
        assert not hasattr(model, "peft_config")  # merged into a plain model
        assert torch.allclose(model(x).logits, expected, atol=1e-5)
        # Axolotl's output folder also holds the base model's config.json (it pre-saves it): still the
        # adapter on its base, not the bare base model and not an error
        base.config.save_pretrained(tmp_path / "run")
        model, _ = load_for_eval(tmp_path / "run")
        assert not hasattr(model, "peft_config") and torch.allclose(model(x).logits, expected, atol=1e-5)
    assert loaded_tokenizer.pad_token is not None
    # weights and an adapter in one folder: is the adapter merged already? Refused, not applied twice
    base.save_pretrained(tmp_path / "both")
    peft_model.save_pretrained(tmp_path / "both")
    with pytest.raises(EvalError, match=r"both .*holds both a whole model's weights and a LoRA adapter"):
        load_for_eval(tmp_path / "both")


def test_every_generated_task_yaml_resolves_its_hook_through_lm_eval(tmp_path):
    """The task YAMLs name their process_results hook as `qtuning.evaluation.<hook>` (also in task folders
    already cached under older versions); lm_eval's own YAML loader must find each one, wherever in the
    evaluation package the hook is defined."""
    pytest.importorskip("lm_eval")
    from lm_eval.tasks._yaml_loader import load_yaml

    from qtuning import evaluation
    from qtuning.evaluation import TASKS, write_lm_eval_tasks

    doc = {"eval_prompt": "q", "answers": ["1"], "choices": ["a", "b"], "gold": 0}
    harness_tasks = [t for t in TASKS if TASKS[t].kind != "nll"]  # nll never goes through lm_eval
    folder = write_lm_eval_tasks({task: [doc] for task in harness_tasks}, root=tmp_path)
    hooks = set()
    for task in harness_tasks:
        config = load_yaml(folder / f"{task}.yaml")
        if "process_results" in config:
            hook = config["process_results"]
            assert callable(hook) and hook is getattr(evaluation, hook.__name__), task
            hooks.add(hook.__name__)
    assert hooks == {
        "lm_eval_process_gsm8k",
        "lm_eval_process_math",
        "lm_eval_process_final_answer",
        "lm_eval_process_qa",
    }
