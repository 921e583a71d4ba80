"""The real CLIP BPE tokenizer, built offline from the bundled OpenAI BPE merge list.

The merge list (``data/bpe_simple_vocab_16e6.txt.gz``, MIT, shipped in the ``open_clip_torch``
wheel) fully determines the 49,408-token CLIP vocabulary. We expand it into the ``vocab.json`` /
``merges.txt`` pair that ``transformers.CLIPTokenizer`` reads, so tiny test models and the embedded
toy-world model tokenize exactly like Stable Diffusion's text encoder.
"""

from __future__ import annotations

import gzip
import json
from functools import lru_cache
from pathlib import Path

CLIP_VOCAB_SIZE = 49408
_BPE_FILE = Path(__file__).parent / "data" / "bpe_simple_vocab_16e6.txt.gz"
_START, _END = "<|startoftext|>", "<|endoftext|>"


def _byte_alphabet() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for raw bytes, in CLIP's vocabulary order.

    Printable bytes map to themselves and come first; the other bytes map to code points from 256 up
    and follow, in byte order.
    """
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    others = [b for b in range(256) if b not in set(printable)]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(others))]


@lru_cache(maxsize=1)
def clip_vocab_and_merges() -> tuple[dict[str, int], list[str]]:
    """Return CLIP's ``(vocab, merges)`` expanded from the bundled merge list."""
    lines = gzip.decompress(_BPE_FILE.read_bytes()).decode("utf-8").split("\n")
    # Line 0 is a version header; the vocabulary is 2 x 256 byte tokens + merges + 2 specials.
    merges = lines[1 : 1 + CLIP_VOCAB_SIZE - 2 * 256 - 2]
    alphabet = _byte_alphabet()
    tokens = alphabet + [a + "</w>" for a in alphabet] + ["".join(m.split(" ")) for m in merges]
    tokens += [_START, _END]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != CLIP_VOCAB_SIZE:
        raise RuntimeError(f"bundled CLIP BPE expanded to {len(vocab)} tokens, expected {CLIP_VOCAB_SIZE}")
    return vocab, merges


def write_clip_tokenizer_files(folder: str | Path) -> Path:
    """Write ``vocab.json``, ``merges.txt`` and a tokenizer config for CLIP into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = clip_vocab_and_merges()
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "bos_token": _START,
        "eos_token": _END,
        "unk_token": _END,
        "pad_token": _END,
        "do_lower_case": True,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return folder


def clip_tokenizer(folder: str | Path | None = None):
    """Return a ``CLIPTokenizer`` with the real CLIP vocabulary, written to ``folder`` (or a temp dir)."""
    import tempfile

    from transformers import CLIPTokenizer

    if folder is None:
        folder = Path(tempfile.mkdtemp(prefix="tav-clip-tok-"))
    folder = write_clip_tokenizer_files(folder)
    tok = CLIPTokenizer.from_pretrained(str(folder))
    check_tokenizer(tok)
    return tok


def check_tokenizer(tokenizer, where: str = "tokenizer") -> None:
    """Raise if ``tokenizer`` is the silently-empty tokenizer transformers 5 returns for a missing vocab."""
    size = len(tokenizer)
    if size < 1000:
        raise ValueError(
            f"{where}: the CLIP tokenizer has only {size} tokens, so its vocab/merges files were not found "
            "(transformers returns an empty tokenizer instead of failing). Check the model folder has "
            "tokenizer/vocab.json and tokenizer/merges.txt."
        )
    ids = tokenizer("a photo of a cat").input_ids
    if len(set(ids[1:-1])) < 2:
        raise ValueError(f"{where}: the tokenizer maps every word to the same id {ids}; its vocabulary is broken.")
