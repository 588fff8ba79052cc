"""The autoregressive prior (engine/render/ar_prior.py): its codebook, that it learns a text →
embedding mapping, that each image depends only on its own generator, that it saves and loads
whole, and that `--prior ar|diffusion|none` reaches the pipeline, or is refused clearly."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from engine.render.ar_prior import AutoregressivePrior  # noqa: E402
from engine.render.types import RenderError, RenderJob  # noqa: E402

DIM, TOKENS = 16, 6


def small_prior(**overrides) -> AutoregressivePrior:
    settings = dict(embedding_dim=DIM, text_tokens=TOKENS, components=4, bins=8, width=32, layers=1, heads=2)
    torch.manual_seed(0)
    return AutoregressivePrior(**{**settings, **overrides})


def anisotropic(n: int, seed: int = 0) -> torch.Tensor:
    """Embeddings whose variance sits in a few directions, as CLIP's do."""
    generator = torch.Generator().manual_seed(seed)
    scales = torch.tensor([4.0, 2.0, 1.0, 0.5] + [0.01] * (DIM - 4))
    return torch.randn(n, DIM, generator=generator) * scales + 1.0


def test_codebook_keeps_the_main_directions_and_round_trips():
    prior = small_prior()
    embeds = anisotropic(2000)
    explained = prior.fit_codebook(embeds)
    assert explained > 0.99  # four directions hold nearly all of it
    tokens = prior.quantise(embeds)
    assert tokens.shape == (2000, 4) and int(tokens.min()) >= 0 and int(tokens.max()) < 8
    # Equal-mass buckets: each used by about an eighth of the embeddings in every direction.
    counts = torch.stack([torch.bincount(tokens[:, k], minlength=8) for k in range(4)])
    assert int(counts.min()) > 2000 / 8 * 0.8
    error = (prior.dequantise(tokens) - embeds).norm(dim=1).mean()
    assert error < 0.35 * embeds.std(0).norm()  # 8 buckets: coarse, but far better than the mean


def conditioning(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A caption that is just its label: embedding ±1 in the first dimension."""
    embeds = torch.zeros(len(labels), DIM)
    embeds[:, 0] = labels.float() * 2 - 1
    states = embeds[:, None].repeat(1, TOKENS, 1)
    mask = torch.zeros(len(labels), TOKENS, dtype=torch.bool)
    mask[:, :2] = True
    return embeds, states, mask


def test_it_learns_which_embedding_a_caption_asks_for():
    """Two captions, two clusters of image embeddings: after training, sampling for each caption
    lands in its own cluster, and the unconditional text (label-free) does not decide it."""
    prior = small_prior()
    centres = torch.zeros(2, DIM)
    centres[0, :2], centres[1, :2] = torch.tensor([3.0, 1.0]), torch.tensor([-3.0, -1.0])
    generator = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 2, (4000,), generator=generator)
    images = centres[labels] + 0.2 * torch.randn(4000, DIM, generator=generator)
    prior.fit_codebook(images)
    optimiser = torch.optim.AdamW(prior.parameters(), lr=3e-3)
    for step in range(150):
        batch = slice(64 * (step % 60), 64 * (step % 60) + 64)
        loss, _ = prior.loss(images[batch], *conditioning(labels[batch]))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    prior.eval()
    asked = torch.tensor([0, 1] * 4)
    uncond = tuple(torch.zeros_like(t) for t in conditioning(asked))
    uncond[2][:, 0] = True
    sampled = prior.sample(
        conditioning(asked), uncond, [torch.Generator().manual_seed(i) for i in range(8)], guidance_scale=1.0
    )
    nearest = torch.cdist(sampled, centres).argmin(1)
    assert nearest.tolist() == asked.tolist()


def test_each_row_depends_only_on_its_own_generator():
    """Whatever else is in the batch: other seeds, and other captions of other lengths."""
    prior = small_prior()
    prior.fit_codebook(anisotropic(500))
    text = conditioning(torch.tensor([0, 1, 1]))
    text[2][0, :] = True  # the first caption is the longest possible, the others two tokens
    uncond = conditioning(torch.tensor([0, 0, 0]))
    together = prior.sample(text, uncond, [torch.Generator().manual_seed(s) for s in (5, 6, 7)])
    alone = prior.sample(tuple(t[1:2] for t in text), tuple(t[1:2] for t in uncond), [torch.Generator().manual_seed(6)])
    assert torch.allclose(together[1:2], alone, atol=1e-5)


def test_save_and_load_keep_the_codebook(tmp_path):
    prior = small_prior()
    prior.fit_codebook(anisotropic(500))
    prior.save_pretrained(tmp_path / "ar_prior")
    loaded = AutoregressivePrior.from_pretrained(tmp_path / "ar_prior")
    for name in ("pca_mean", "pca_basis", "bin_edges", "bin_centres"):
        assert torch.equal(getattr(loaded, name), getattr(prior, name)), name
    tokens = torch.randint(0, 8, (3, 4))
    assert torch.allclose(loaded.dequantise(tokens), prior.dequantise(tokens))


# --- through the renderer --------------------------------------------------------------------


def unclip_renderer(folder, data_dir):
    from engine.render.families.unclip import UnCLIPRenderer
    from engine.render.loader import resolve_model

    return UnCLIPRenderer.load(resolve_model(str(folder), data_dir), device="cpu", dtype="float32")


def job(prior: str | None, seed: int = 3) -> RenderJob:
    params = {"n": 2} if prior is None else {"n": 2, "prior": prior}
    return RenderJob(1, "text2image", "a red star", None, seed, 2, params)


def test_each_prior_renders_and_is_recorded_in_the_manifest(tiny_model_dir, tmp_path):
    renderer = unclip_renderer(tiny_model_dir, tmp_path)
    assert renderer.pipe.ar_prior is not None
    drawn = {}
    for prior in ("diffusion", "ar", "none"):
        result = renderer.render(job(prior), lambda *_: None)
        assert len(result.images) == 2
        assert result.info["prior"] == prior
        drawn[prior] = result.images[0].png
    assert renderer.render(job(None), lambda *_: None).info["prior"] == "diffusion"
    # Three different routes to the decoder: three different pictures from one seed.
    assert len(set(drawn.values())) == 3


def test_ar_on_a_model_without_one_is_refused(tiny_model_dir, tmp_path):
    import shutil

    folder = tmp_path / "no-ar"
    shutil.copytree(tiny_model_dir, folder)
    shutil.rmtree(folder / "ar_prior")
    renderer = unclip_renderer(folder, tmp_path)
    with pytest.raises(RenderError, match="no autoregressive prior"):
        renderer.render(job("ar"), lambda *_: None)
    assert len(renderer.render(job("diffusion"), lambda *_: None).images) == 2


def test_kandinsky_refuses_a_prior_it_does_not_have(tmp_path_factory):
    from engine.render.factory import load_renderer
    from engine.render.tiny import build_tiny_kandinsky

    folder = build_tiny_kandinsky(tmp_path_factory.mktemp("kandinsky-prior"))
    renderer = load_renderer(str(folder), folder.parent, device="cpu", dtype="float32")
    with pytest.raises(RenderError, match="only its diffusion prior"):
        renderer.render(job("ar"), lambda *_: None)


def test_a_rows_logits_do_not_depend_on_the_other_captions_lengths():
    """Padding after the batch's longest caption is cut off; the buckets' positions must not move
    with it (else training sees each bucket at a position that depends on its batch)."""
    prior = small_prior()
    prior.fit_codebook(anisotropic(500))
    embeds, states, mask = conditioning(torch.tensor([1, 0]))
    mask[1, :] = True  # the other caption fills every token slot
    tokens = torch.randint(0, 8, (2, 3), generator=torch.Generator().manual_seed(2))
    together = prior(tokens, embeds, states, mask)
    alone = prior(tokens[:1], embeds[:1], states[:1], mask[:1])
    assert torch.allclose(together[:1], alone, atol=1e-5)
