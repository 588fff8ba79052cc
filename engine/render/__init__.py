"""Rendering: the only package that imports torch, diffusers and transformers.

Nothing heavy is imported here; import the submodules you need (`engine.render.renderer`,
`engine.render.loader`, ...) and they import torch themselves. `engine.render.types` is plain
data and safe to import anywhere.
"""
