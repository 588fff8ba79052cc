"""Rendering: the only package that imports torch, diffusers and transformers.

Laid out like diffusers' pipelines:

- `types`: what the worker asks for and gets back (RenderJob, RenderResult, ...): plain data,
  no torch, safe to import anywhere.
- `base`: the renderer base every family shares (settings, progress, packaging, the aspect table).
- `families.unclip`, `families.kandinsky`: one renderer per model family, each on the base only.
- `factory`: picks and loads the family for a model (`load_renderer`), like auto_pipeline.
- `loader`: finds a model on disk and loads the unCLIP components; `unclip`: our unCLIP pipeline;
  `names`: the model names that need no folder (builtin, tiny-random).
- `tiny`: builds the tiny random test models (the loader never imports it); `noop`: the
  benchmarks' renderer; `tokenizer`: building and checking CLIP tokenizers.

Nothing heavy is imported here; import the submodules you need and they import torch
themselves.
"""
