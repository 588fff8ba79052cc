"""Build a CLIP tokenizer offline: a byte-level BPE trained on the domain's sentences.

Used by the tiny random test model and by the built-in model's training. The result is a real
`transformers.CLIPTokenizer` (same normaliser, split pattern and `</w>` suffix as OpenAI's), so it
saves and loads like any CLIP tokenizer. Every byte and byte+`</w>` is in the vocabulary, so no
input is ever unknown.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # tokenizers and transformers are imported when a tokenizer is built
    from transformers import CLIPTokenizer, PreTrainedTokenizerBase

BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def build_clip_tokenizer(corpus: Iterable[str], *, vocab_size: int = 1000, max_length: int = 32) -> CLIPTokenizer:
    """Train a CLIP-style BPE on `corpus` and return a CLIPTokenizer with `max_length` tokens."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    byte_alphabet = pre_tokenizers.ByteLevel.alphabet()
    tokenizer = Tokenizer(models.BPE(end_of_word_suffix="</w>", unk_token=EOS))
    # The same normaliser and pre-tokeniser CLIPTokenizer builds, so training sees what use sees.
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(
                Regex(
                    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
                ),
                behavior="removed",
                invert=True,
            ),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS, EOS],
        initial_alphabet=byte_alphabet,
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(corpus), trainer=trainer)

    with tempfile.TemporaryDirectory() as folder:
        tokenizer.model.save(folder)
        vocab: dict[str, int] = json.loads(Path(folder, "vocab.json").read_text())
        merges = [
            tuple(line.split(" "))
            for line in Path(folder, "merges.txt").read_text().splitlines()
            if line and not line.startswith("#")
        ]
    for symbol in sorted(byte_alphabet):
        for token in (symbol, symbol + "</w>"):
            if token not in vocab:
                vocab[token] = len(vocab)
    # transformers annotates `merges` as list[str]; the BPE model it hands them to takes pairs.
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)  # type: ignore[arg-type]


def check_tokenizer(tokenizer: PreTrainedTokenizerBase, folder: Path | str) -> None:
    """Fail loudly when a folder's tokenizer files were missing (it would load as 2 tokens)."""
    if len(tokenizer) < 300:
        raise RuntimeError(
            f"the tokenizer in {folder} has only {len(tokenizer)} tokens: its vocab/merges files are missing or broken"
        )
