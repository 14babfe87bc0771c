"""Networks of DALACE (paper section 3.3), all sizes configurable, paper values by default."""

from .blocks import AdaptiveInstanceNorm2d, AdaINResBlock, ConvNormAct, ResBlock
from .discriminators import ImageDiscriminator, PairDiscriminator
from .encoders import AnatomyEncoder, ModalityEncoder
from .generator import StyleGenerator
from .cyclegan import CycleGAN
from .dalace import DALACE, MODALITIES
from .ensemble import ProbabilityEnsemble, checkpoint_members, ensemble_state, log_mean_softmax, network_for_checkpoint
from .inference import DomainAgnosticSegmenter, merge_paths
from .loading import refuse_partial_loads
from .rescaled import RescaledInput
from .translator import AnatomyTranslator, matching_generator

__all__ = [
    "AdaptiveInstanceNorm2d",
    "AdaINResBlock",
    "AnatomyEncoder",
    "AnatomyTranslator",
    "ConvNormAct",
    "CycleGAN",
    "DALACE",
    "DomainAgnosticSegmenter",
    "ImageDiscriminator",
    "MODALITIES",
    "ModalityEncoder",
    "PairDiscriminator",
    "ProbabilityEnsemble",
    "RescaledInput",
    "ResBlock",
    "StyleGenerator",
    "checkpoint_members",
    "ensemble_state",
    "log_mean_softmax",
    "matching_generator",
    "merge_paths",
    "network_for_checkpoint",
    "refuse_partial_loads",
]
