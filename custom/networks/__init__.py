"""Networks of DALACE (paper section 3.3), all sizes configurable, paper values by default."""

from .blocks import AdaptiveInstanceNorm2d, AdaINResBlock, ConvNormAct, ResBlock
from .discriminators import ImageDiscriminator, PairDiscriminator
from .encoders import AnatomyEncoder, ModalityEncoder
from .generator import StyleGenerator
from .cyclegan import CycleGAN, ImageTranslator
from .dalace import DALACE, MODALITIES
from .inference import DomainAgnosticSegmenter

__all__ = [
    "AdaptiveInstanceNorm2d",
    "AdaINResBlock",
    "AnatomyEncoder",
    "ConvNormAct",
    "CycleGAN",
    "DALACE",
    "DomainAgnosticSegmenter",
    "ImageDiscriminator",
    "ImageTranslator",
    "MODALITIES",
    "ModalityEncoder",
    "PairDiscriminator",
    "ResBlock",
    "StyleGenerator",
]
