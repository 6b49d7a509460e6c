"""The gradstate classes under their Metal Performance Shaders names, for code ported from Swift or
Objective-C. Each name is the gradstate object itself, not a wrapper."""

from . import Buffer as MTLBuffer
from . import Convolution as MPSCNNConvolution
from . import ConvolutionGradient as MPSCNNConvolutionGradient
from . import ConvolutionGradientState as MPSCNNConvolutionGradientState
from . import Device as MTLDevice
from . import GradientOption as MPSCNNConvolutionGradientOption
from . import GradientState as MPSNNGradientState
from . import InstanceNormalization as MPSCNNInstanceNormalization
from . import InstanceNormalizationGradient as MPSCNNInstanceNormalizationGradient
from . import InstanceNormalizationGradientState as MPSCNNInstanceNormalizationGradientState
from . import WeightsLayout as MPSCNNConvolutionWeightsLayout
from . import default_device as MTLCreateSystemDefaultDevice

# MPSState is the root of MPS's state classes; gradstate has one state base class.
MPSState = MPSNNGradientState

__all__ = [
    "MPSCNNConvolution",
    "MPSCNNConvolutionGradient",
    "MPSCNNConvolutionGradientOption",
    "MPSCNNConvolutionGradientState",
    "MPSCNNConvolutionWeightsLayout",
    "MPSCNNInstanceNormalization",
    "MPSCNNInstanceNormalizationGradient",
    "MPSCNNInstanceNormalizationGradientState",
    "MPSNNGradientState",
    "MPSState",
    "MTLBuffer",
    "MTLCreateSystemDefaultDevice",
    "MTLDevice",
]
