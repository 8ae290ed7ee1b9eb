"""Mutation testing of ``muprewrite check``: style models, a mutator of emitted source, a harness.

``models/``: small models written from scratch in the styles of public code (DiT's adaLN-Zero,
nanoGPT, U-ViT, PixArt's two files, SD3's MMDiT, vit-pytorch). ``mutator``: every single-edit
mutant of what the emitter wrote. ``harness``: emit, check the file, check every mutant.
"""
