"""DALACE liver bundle: the Python package that the bundle configs instantiate from.

Sub-packages, one concept each:

- ``custom.networks``: encoders, the AdaIN generator, discriminators, the DALACE composite and
  the one-tensor-in, one-tensor-out inference module.
- ``custom.losses``: the paper's loss terms (equations 1-8).
- ``custom.transforms``: MONAI transforms MONAI lacks (N4, per-modality normalization, slices).
- ``custom.data``: datalists, their validation and k-fold splits, inference inputs as datalists.
- ``custom.engines``: the trainers (DALACE, CycleGAN/TD-GAN), MONAI ``Trainer`` subclasses.
- ``custom.handlers``: event handlers (checkpoints, resume, figures, metrics, input checks, EMA).
- ``custom.utils``: atomic file writes.
"""

__version__ = "0.1.0"
