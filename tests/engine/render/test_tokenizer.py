"""The offline CLIP tokenizer builder, in its two forms: CLIP's (a word's end marked) and the
word-start one (every piece after a word's first marked as well)."""

from __future__ import annotations

import pytest

pytest.importorskip("tokenizers")
pytest.importorskip("transformers")

from engine.render.tokenizer import CONTINUES, build_clip_tokenizer  # noqa: E402

CORPUS = [
    "a red star on a blue background",
    "a green square on white",
    "the circle is yellow",
    "a small red triangle on the left, blue behind it",
] * 40


@pytest.fixture(scope="module")
def tokenizers():
    return {
        "clip": build_clip_tokenizer(CORPUS, vocab_size=300, max_length=16),
        "word_starts": build_clip_tokenizer(CORPUS, vocab_size=300, max_length=16, word_starts=True),
    }


def test_an_unknown_word_ending_in_a_known_one_reads_apart_from_it_only_with_word_starts(tokenizers):
    """CLIP's BPE ends "centred" in red's own token; the word-start tokenizer marks that piece as
    the inside of a word, so `red</w>` stands only for the word red."""
    clip, marked = tokenizers["clip"], tokenizers["word_starts"]
    assert clip.tokenize("centred")[-1] == "red</w>"
    assert "red</w>" not in marked.tokenize("centred")
    assert all(piece.startswith(CONTINUES) for piece in marked.tokenize("centred")[1:])
    assert marked.tokenize("a red") == clip.tokenize("a red") == ["a</w>", "red</w>"]


def test_the_word_start_tokenizer_frames_pads_and_truncates_like_clip(tokenizers, tmp_path):
    """BOS and EOS around the text, EOS as padding, truncation keeping EOS last; saved and loaded
    back with AutoTokenizer it gives the same ids, and any text, emoji included, has no unknown."""
    from transformers import AutoTokenizer

    clip, marked = tokenizers["clip"], tokenizers["word_starts"]
    marked.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    texts = ["a red star", "Ein grünes Quadrat ☃ " * 6, ""]
    for tokenizer in (marked, loaded):
        assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (
            clip.bos_token_id,
            clip.eos_token_id,
            clip.pad_token_id,
        )
        batch = tokenizer(texts, padding="max_length", max_length=16, truncation=True)
        for ids, mask in zip(batch.input_ids, batch.attention_mask, strict=True):
            assert len(ids) == 16 and ids[0] == tokenizer.bos_token_id
            assert ids[sum(mask) - 1] == tokenizer.eos_token_id
            assert tokenizer.unk_token_id not in ids[1 : sum(mask) - 1]
    assert loaded(texts).input_ids == marked(texts).input_ids
