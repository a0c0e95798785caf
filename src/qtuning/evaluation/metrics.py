"""The metrics of the five task families (SQuAD exact match and F1, GSM8K and MATH answers, final answers,
choice accuracy) and the lm_eval process_results hooks that the generated task YAMLs name as
`qtuning.evaluation.<hook>`."""

from __future__ import annotations

import collections
import re
import string

from ..errors import EvalError
from .tasks import FINAL_ANSWER_TASKS


def normalize_answer(text: str) -> str:
    """SQuAD v1.1 normalisation: lowercase, drop punctuation, drop articles, collapse whitespace."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _f1(prediction: str, truth: str) -> float:
    pred_tokens, true_tokens = normalize_answer(prediction).split(), normalize_answer(truth).split()
    common = collections.Counter(pred_tokens) & collections.Counter(true_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(true_tokens)
    return 2 * precision * recall / (precision + recall)


def exact_match_score(prediction: str, answers: list[str]) -> float:
    """1.0 if the normalised prediction equals any normalised accepted answer."""
    return float(any(normalize_answer(prediction) == normalize_answer(a) for a in answers))


def f1_score(prediction: str, answers: list[str]) -> float:
    """SQuAD token F1, the max over the accepted answers."""
    return max((_f1(prediction, a) for a in answers), default=0.0)


def first_line(text: str) -> str:
    """The short answer of a QA response: its first non-empty line."""
    for line in text.strip().splitlines():
        if line.strip():
            return line.strip()
    return ""


_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def _clean_number(text: str) -> str | None:
    text = text.replace(",", "").replace("$", "").strip().rstrip(".")
    try:
        value = float(text)
    except ValueError:
        return None
    return str(int(value)) if value == int(value) and abs(value) < 1e15 else repr(value)


def extract_gsm8k_answer(text: str) -> str | None:
    """The number after the last "####" if there is one, else the last number in the text; canonical
    form ("1,000.00" -> "1000", "$18" -> "18"); None when there is no number."""
    if "####" in text:
        after = text.rsplit("####", 1)[1]
        found = _NUMBER.findall(after)
        if found:
            return _clean_number(found[0])
    found = _NUMBER.findall(text)
    return _clean_number(found[-1]) if found else None


def gsm8k_gold(record: dict) -> str:
    gold = record.get("answer") or record.get("response", "")
    value = extract_gsm8k_answer(gold if "answer" not in record else f"#### {gold}")
    if value is None:
        raise EvalError(f"gsm8k record {record.get('id')!r}: no number in its answer {gold!r:.80}")
    return value


def last_boxed(text: str) -> str | None:
    """The content of the last \\boxed{...} (or \\fbox{...}), nested braces included; also
    "\\boxed 5" without braces. None when there is none or it is not closed."""
    index = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if index < 0:
        return None
    rest = text[index:]
    head = "\\boxed" if rest.startswith("\\boxed") else "\\fbox"
    rest = rest[len(head) :]
    if rest.startswith(" "):
        return rest[1:].split("$")[0].strip()
    if not rest.startswith("{"):
        return None
    depth = 0
    for i, ch in enumerate(rest):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return rest[1:i]
    return None


def _fix_fracs(string_: str) -> str:
    parts = string_.split("\\frac")
    out = parts[0]
    for part in parts[1:]:
        out += "\\frac"
        if part.startswith("{"):
            out += part
        elif len(part) >= 2:
            a, b, rest = part[0], part[1], part[2:]
            out += f"{{{a}}}{{{b}}}{rest}" if b != "{" else f"{{{a}}}{b}{rest}"
        else:
            return string_
    return out


def _fix_sqrt(string_: str) -> str:
    return re.sub(r"\\sqrt(\w)", r"\\sqrt{\1}", string_)


def normalize_math_answer(text: str) -> str:
    """Light normalisation of a MATH final answer (Hendrycks et al.'s `strip_string`): no spaces,
    no \\left/\\right, \\!, $, degrees, units text, dfrac/tfrac -> frac, "0.5" for ".5", a/b -> \\frac{a}{b},
    "x = 5" -> "5", "\\frac12" -> "\\frac{1}{2}", "\\sqrt2" -> "\\sqrt{2}"."""
    s = text.strip().replace("\n", "").rstrip(".")
    s = s.replace("\\!", "").replace("\\\\", "\\")
    s = s.replace("tfrac", "frac").replace("dfrac", "frac")
    s = s.replace("\\left", "").replace("\\right", "")
    s = s.replace("^{\\circ}", "").replace("^\\circ", "")
    s = s.replace("\\$", "").replace("$", "")
    s = re.sub(r"\\text\{\s*[a-zA-Z ]*\}$", "", s) if re.search(r"\d", s) else s  # trailing units
    s = re.sub(r"\\(?:text|mbox|mathrm)\{([^{}]*)\}", r"\1", s)
    s = s.replace("\\%", "").replace("%", "")
    s = s.replace(" .", " 0.").replace("{.", "{0.")
    if s.startswith("."):
        s = "0" + s
    if "=" in s and len(s.split("=")[0].strip()) <= 2:
        s = s.split("=", 1)[1]
    s = _fix_sqrt(s)
    s = s.replace(" ", "")
    s = _fix_fracs(s)
    if s == "0.5":
        s = "\\frac{1}{2}"
    if re.fullmatch(r"-?\d+/\d+", s):
        a, b = s.lstrip("-").split("/")
        s = ("-" if s.startswith("-") else "") + f"\\frac{{{a}}}{{{b}}}"
    if re.fullmatch(r"-?\d+\.0+", s):
        s = s.split(".")[0]
    return s


def math_equal(prediction: str | None, gold: str) -> bool:
    return prediction is not None and normalize_math_answer(prediction) == normalize_math_answer(gold)


def math_gold(record: dict) -> str:
    """The MATH reference answer: the last \\boxed{} of the solution (record["answer"] is oe-eval's
    normalised form, and 34 of them carry a broken "\\iny"), else record["answer"]."""
    boxed = last_boxed(record.get("response", ""))
    if boxed is not None:
        return boxed
    if record.get("answer"):
        return str(record["answer"])
    raise EvalError(f"math record {record.get('id')!r}: no \\boxed{{}} in its response and no answer")


def choice_accuracy(loglikelihoods: list[float], choices: list[str], gold: int) -> dict[str, float]:
    """lm_eval's multiple-choice metrics for one question: acc (argmax of the summed log-likelihood)
    and acc_norm (argmax of log-likelihood / length of the choice text in bytes, as lm_eval counts it)."""
    import numpy as np

    lls = np.asarray(loglikelihoods, dtype=np.float64)
    lengths = np.asarray([float(len(c.encode("utf-8"))) for c in choices])
    return {"acc": float(int(np.argmax(lls)) == gold), "acc_norm": float(int(np.argmax(lls / lengths)) == gold)}


def score_generation(task: str, response: str, doc: dict) -> dict[str, float]:
    """The metrics of one generated response against a prepared document (its `answers`)."""
    if task == "gsm8k":
        return {"exact_match": float(extract_gsm8k_answer(response) == doc["answers"][0])}
    if task == "math":
        return {"exact_match": float(math_equal(last_boxed(response), doc["answers"][0]))}
    if task in FINAL_ANSWER_TASKS:
        from ..data.procedural import final_answer

        return {"exact_match": float(final_answer(response) == doc["answers"][0])}
    answer = first_line(response)
    return {"exact_match": exact_match_score(answer, doc["answers"]), "f1": f1_score(answer, doc["answers"])}


# lm_eval's process_results hooks (named by the task YAMLs as !function qtuning.evaluation.<name>)
def lm_eval_process_gsm8k(doc: dict, results: list[str]) -> dict[str, float]:
    return score_generation("gsm8k", results[0], doc)


def lm_eval_process_math(doc: dict, results: list[str]) -> dict[str, float]:
    return score_generation("math", results[0], doc)


def lm_eval_process_final_answer(doc: dict, results: list[str]) -> dict[str, float]:
    return score_generation("arith", results[0], doc)


def lm_eval_process_qa(doc: dict, results: list[str]) -> dict[str, float]:
    return score_generation("squad", results[0], doc)
