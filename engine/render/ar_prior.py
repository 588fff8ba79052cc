"""The unCLIP paper's autoregressive prior: CLIP text → CLIP image embedding, token by token.

As in Ramesh et al. 2022 (section 2.1): the image embedding is reduced with PCA to its first
`components` directions, each coordinate is quantised into `bins` buckets, and a decoder-only
Transformer with a causal mask predicts the buckets in order (highest-variance direction first),
after a prefix of the caption: its CLIP text embedding and the text encoder's token states. The
caption is dropped from a share of training examples so classifier-free guidance works at
sampling time, as for the diffusion prior.

Two simplifications against the paper, both because the built-in model is tiny: the buckets are
equal-mass quantiles of the training embeddings per direction (the paper does not say; with 64
buckets uniform ones waste most of them on the tails), and there is no extra token for the
text-image dot product that the paper uses to steer toward higher similarity.

The PCA basis and the bucket table are buffers, saved and loaded with the weights, so a folder's
`ar_prior/` is self-contained (`save_pretrained` / `from_pretrained`, like diffusers' models).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn
from torch.nn import functional as F


# diffusers itself declares config_name differently on the two bases (as all its models inherit).
class AutoregressivePrior(ModelMixin, ConfigMixin):  # type: ignore[misc]
    """Causal Transformer over quantised PCA coordinates of a CLIP image embedding."""

    @register_to_config
    def __init__(
        self,
        embedding_dim: int = 64,
        text_tokens: int = 32,
        components: int = 32,
        bins: int = 64,
        width: int = 128,
        layers: int = 4,
        heads: int = 4,
    ) -> None:
        super().__init__()
        self.n_components, self.n_bins, self.n_text_tokens = components, bins, text_tokens
        # Filled by `fit_codebook` from training embeddings; saved with the weights.
        self.register_buffer("pca_mean", torch.zeros(embedding_dim))
        self.register_buffer("pca_basis", torch.eye(components, embedding_dim))  # (K, D), orthonormal rows
        self.register_buffer("bin_edges", torch.zeros(components, bins - 1))  # inner edges, ascending
        self.register_buffer("bin_centres", torch.zeros(components, bins))
        self.text_embed_in = nn.Linear(embedding_dim, width)
        self.text_states_in = nn.Linear(embedding_dim, width)
        # Each direction has its own bucket vocabulary: bucket b of direction k is token k * bins + b.
        self.token_in = nn.Embedding(components * bins, width)
        self.start = nn.Parameter(torch.zeros(width))
        self.positions = nn.Parameter(torch.randn(1 + text_tokens + components, width) * 0.02)
        block = nn.TransformerEncoderLayer(
            width, heads, 4 * width, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.transformer = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm_out = nn.LayerNorm(width)
        self.head = nn.Linear(width, bins)

    # --- the codebook: PCA and buckets -------------------------------------------------------

    @torch.no_grad()
    def fit_codebook(self, embeds: torch.Tensor) -> float:
        """Set the PCA basis and the equal-mass buckets from (N, D) image embeddings; return the
        share of their variance the kept directions explain."""
        k, bins = self.n_components, self.n_bins
        mean = embeds.mean(0)
        centred = embeds - mean
        _, singular, vh = torch.linalg.svd(centred, full_matrices=False)
        self.pca_mean.copy_(mean)
        self.pca_basis.copy_(vh[:k])
        coords = centred @ vh[:k].T  # (N, K)
        quantiles = torch.linspace(0, 1, bins + 1, device=embeds.device)[1:-1]
        self.bin_edges.copy_(torch.quantile(coords, quantiles, dim=0).T.contiguous())
        tokens = self._bucketise(coords)
        for direction in range(k):
            for b in range(bins):
                members = coords[tokens[:, direction] == b, direction]
                self.bin_centres[direction, b] = members.mean() if len(members) else 0.0
        variance = singular**2
        return float(variance[:k].sum() / variance.sum())

    def _bucketise(self, coords: torch.Tensor) -> torch.Tensor:
        return torch.stack(
            [torch.bucketize(coords[:, k].contiguous(), self.bin_edges[k]) for k in range(coords.shape[1])], dim=1
        )

    def quantise(self, embeds: torch.Tensor) -> torch.Tensor:
        """(N, D) image embeddings → (N, K) bucket indices."""
        coords = (embeds.float() - self.pca_mean) @ self.pca_basis.T
        return self._bucketise(coords)

    def dequantise(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, K) bucket indices → (N, D) image embeddings (each bucket's mean, back through PCA)."""
        coords = torch.gather(self.bin_centres.expand(tokens.shape[0], -1, -1), 2, tokens[:, :, None])[:, :, 0]
        return coords @ self.pca_basis + self.pca_mean

    # --- the network -------------------------------------------------------------------------

    def forward(
        self, tokens: torch.Tensor, text_embeds: torch.Tensor, text_states: torch.Tensor, text_mask: torch.Tensor
    ) -> torch.Tensor:
        """Logits (N, T + 1, bins) for directions 0..T given the first T buckets `tokens` (N, T).

        The sequence is [text embedding, token states (padding masked), start, buckets...]."""
        batch, known = tokens.shape
        # Captions are a third of the tokenizer's length: the padding after the longest one in the
        # batch is cut off. Every part keeps its own slots of the position table (the buckets'
        # start after the longest possible caption), so a row's result does not depend on how
        # long the other captions in its batch are.
        used = max(1, int(text_mask.sum(1).max()))
        text_states, text_mask = text_states[:, :used], text_mask[:, :used]
        offsets = torch.arange(known, device=tokens.device) * self.n_bins
        prefix = torch.cat([self.text_embed_in(text_embeds)[:, None], self.text_states_in(text_states)], dim=1)
        prefix = prefix + self.positions[: 1 + used]
        first = 1 + self.n_text_tokens
        body = torch.cat([self.start.expand(batch, 1, -1), self.token_in(tokens + offsets)], dim=1)
        body = body + self.positions[first : first + 1 + known]
        sequence = torch.cat([prefix, body], dim=1)
        length = sequence.shape[1]
        causal = torch.triu(torch.ones(length, length, dtype=torch.bool, device=tokens.device), diagonal=1)
        padding = torch.zeros(batch, length, dtype=torch.bool, device=tokens.device)
        padding[:, 1 : 1 + text_states.shape[1]] = ~text_mask.bool()
        hidden = self.transformer(sequence, mask=causal, src_key_padding_mask=padding)
        return self.head(self.norm_out(hidden[:, prefix.shape[1] :]))

    def loss(
        self, image_embeds: torch.Tensor, text_embeds: torch.Tensor, text_states: torch.Tensor, text_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy of every bucket given the ones before it, and top-1 accuracy."""
        target = self.quantise(image_embeds)
        logits = self(target[:, :-1], text_embeds, text_states, text_mask)
        loss = F.cross_entropy(logits.reshape(-1, self.n_bins), target.reshape(-1))
        accuracy = (logits.argmax(-1) == target).float().mean()
        return loss, accuracy

    @torch.no_grad()
    def sample(
        self,
        text: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        uncond: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        generators: list[torch.Generator],
        *,
        guidance_scale: float = 2.0,
        temperature: float = 1.0,
        on_step: Callable[[], None] | None = None,
    ) -> torch.Tensor:
        """(N, D) image embeddings for N captions: `text` and `uncond` are (embeds, token states,
        mask) of the captions and of each one's unconditional (negative) text, row for row. Each
        row draws from its own generator, so an image depends only on its own seed, whatever else
        is in the batch."""
        embeds, states, mask = text
        batch = embeds.shape[0]
        both_embeds = torch.cat([embeds, uncond[0]])
        both_states = torch.cat([states, uncond[1]])
        both_mask = torch.cat([mask, uncond[2]])
        tokens = torch.zeros(batch, 0, dtype=torch.long, device=embeds.device)
        for _ in range(self.n_components):
            logits = self(tokens.repeat(2, 1), both_embeds, both_states, both_mask)[:, -1].float()
            conditional, unconditional = logits.chunk(2)
            guided = unconditional + guidance_scale * (conditional - unconditional)
            probabilities = F.softmax(guided / max(temperature, 1e-4), dim=-1).cpu()
            picked = [
                torch.multinomial(row, 1, generator=generator)
                for row, generator in zip(probabilities, generators, strict=True)
            ]
            tokens = torch.cat([tokens, torch.cat(picked).to(tokens.device)[:, None]], dim=1)
            if on_step:
                on_step()
        return self.dequantise(tokens)
