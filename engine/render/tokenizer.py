"""Build a CLIP tokenizer offline: a byte-level BPE trained on the domain's sentences.

Used by the tiny random test model and by the built-in model's training. The result is a real
`transformers.CLIPTokenizer` (same normaliser, split pattern and `</w>` suffix as OpenAI's), so it
saves and loads like any CLIP tokenizer. Every byte and byte+`</w>` is in the vocabulary, so no
input is ever unknown.

`word_starts=True` builds the same BPE with one difference: a piece that continues a word is
marked (`##`), as WordPiece does, so a word's *start* is visible, not only its end. CLIP's BPE
splits an unknown word such as "coloured" into `c o lo u red</w>`, whose last piece is the colour
red's own token; with the mark an inner piece is never a word's own token (the shipped
tokenizer splits it `co ##lou ##re ##d</w>`), and `red</w>` means only the word.
`CLIPTokenizer` rebuilds its BPE without that option, so this one is a
`PreTrainedTokenizerFast` (the same `tokenizer.json`, loaded as written: `AutoTokenizer` loads it).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

if TYPE_CHECKING:  # tokenizers and transformers are imported when a tokenizer is built
    from tokenizers import Tokenizer
    from transformers import CLIPTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
#: `word_starts`: the mark on every piece but a word's first.
CONTINUES = "##"


@overload
def build_clip_tokenizer(
    corpus: Iterable[str], *, vocab_size: int = ..., max_length: int = ..., word_starts: Literal[False] = ...
) -> CLIPTokenizer: ...
@overload
def build_clip_tokenizer(
    corpus: Iterable[str], *, vocab_size: int = ..., max_length: int = ..., word_starts: Literal[True]
) -> PreTrainedTokenizerFast: ...
@overload
def build_clip_tokenizer(
    corpus: Iterable[str], *, vocab_size: int = ..., max_length: int = ..., word_starts: bool
) -> PreTrainedTokenizerBase: ...
def build_clip_tokenizer(
    corpus: Iterable[str], *, vocab_size: int = 1000, max_length: int = 32, word_starts: bool = False
) -> PreTrainedTokenizerBase:
    """Train a CLIP-style BPE on `corpus` and return a tokenizer with `max_length` tokens: a
    CLIPTokenizer, or with `word_starts` a PreTrainedTokenizerFast whose inner pieces are marked."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    byte_alphabet = pre_tokenizers.ByteLevel.alphabet()
    # Given only when wanted: both take a string there, never None.
    marks: dict[str, Any] = {"continuing_subword_prefix": CONTINUES} if word_starts else {}
    tokenizer = Tokenizer(models.BPE(end_of_word_suffix="</w>", unk_token=EOS, **marks))
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
        **marks,
    )
    tokenizer.train_from_iterator(list(corpus), trainer=trainer)
    if word_starts:
        return _marked_tokenizer(tokenizer, byte_alphabet, max_length)

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


def _marked_tokenizer(tokenizer: Tokenizer, byte_alphabet: list[str], max_length: int) -> PreTrainedTokenizerFast:
    """`word_starts`: every byte in each of its four forms joins the vocabulary, so no input is
    unknown, and the BPE is rebuilt on it (the trained one keeps its vocabulary fixed)."""
    from tokenizers import Tokenizer, models, processors
    from transformers import PreTrainedTokenizerFast

    spec = json.loads(tokenizer.to_str())
    vocab: dict[str, int] = spec["model"]["vocab"]
    for symbol in sorted(byte_alphabet):
        for token in (symbol, symbol + "</w>", CONTINUES + symbol, CONTINUES + symbol + "</w>"):
            if token not in vocab:
                vocab[token] = len(vocab)
    spec["model"]["vocab"] = vocab
    marked = Tokenizer.from_str(json.dumps(spec))
    assert isinstance(marked.model, models.BPE)
    # BOS and EOS around every text, as CLIPTokenizer puts them.
    bos, eos = vocab[BOS], vocab[EOS]
    marked.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", pair=f"{BOS} $A {EOS} $B {EOS}", special_tokens=[(BOS, bos), (EOS, eos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=marked, bos_token=BOS, eos_token=EOS, pad_token=EOS, unk_token=EOS, model_max_length=max_length
    )


def check_tokenizer(tokenizer: PreTrainedTokenizerBase, folder: Path | str) -> None:
    """Fail loudly when a folder's tokenizer files were missing (it would load as 2 tokens)."""
    if len(tokenizer) < 300:
        raise RuntimeError(
            f"the tokenizer in {folder} has only {len(tokenizer)} tokens: its vocab/merges files are missing or broken"
        )
