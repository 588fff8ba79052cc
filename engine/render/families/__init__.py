"""Model families: one module per family, each a `engine.render.base.BaseRenderer` subclass.

- `unclip`: Karlo-layout models and the built-in model, through our own pipeline
  (`engine/render/unclip.py`).
- `kandinsky`: Kandinsky 2.2, through diffusers' maintained pipelines.

A family imports the base, the loader, the render types and its own pipeline, never another
family or `engine.render.factory` (tests/architecture/test_render_layers.py checks it): the
factory is the one place that knows them all, so a new family touches its module and the
factory. Nothing is imported here, so choosing one family never loads another.
"""
