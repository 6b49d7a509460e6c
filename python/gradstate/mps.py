"""The gradstate classes under their Metal Performance Shaders names, for code ported from Swift or
Objective-C. Each name is the gradstate object itself, not a wrapper."""

from . import Buffer as MTLBuffer
from . import Convolution as MPSCNNConvolution
from . import ConvolutionGradient as MPSCNNConvolutionGradient
from . import ConvolutionGradientState as MPSCNNConvolutionGradientState
from . import ConvolutionWeightsAndBiasesState as MPSCNNConvolutionWeightsAndBiasesState
from . import Device as MTLDevice
from . import GradientOption as MPSCNNConvolutionGradientOption
from . import GradientState as MPSNNGradientState
from . import InstanceNormalization as MPSCNNInstanceNormalization
from . import InstanceNormalizationGradient as MPSCNNInstanceNormalizationGradient
from . import InstanceNormalizationGradientState as MPSCNNInstanceNormalizationGradientState
from . import NormalizationGammaAndBetaState as MPSCNNNormalizationGammaAndBetaState
from . import WeightsLayout as MPSCNNConvolutionWeightsLayout
from . import default_device as MTLCreateSystemDefaultDevice
from .optim import SGD as MPSNNOptimizerStochasticGradientDescent
from .optim import Adam as MPSNNOptimizerAdam
from .optim import Optimizer as MPSNNOptimizer
from .optim import RMSProp as MPSNNOptimizerRMSProp

# MPSState is the root of MPS's state classes. In gradstate the gradient states share GradientState; the
# parameter states (ConvolutionWeightsAndBiasesState, NormalizationGammaAndBetaState) are plain holders of
# Buffers with no read count.
MPSState = MPSNNGradientState

__all__ = [
    "MPSCNNConvolution",
    "MPSCNNConvolutionGradient",
    "MPSCNNConvolutionGradientOption",
    "MPSCNNConvolutionGradientState",
    "MPSCNNConvolutionWeightsAndBiasesState",
    "MPSCNNConvolutionWeightsLayout",
    "MPSCNNInstanceNormalization",
    "MPSCNNInstanceNormalizationGradient",
    "MPSCNNInstanceNormalizationGradientState",
    "MPSCNNNormalizationGammaAndBetaState",
    "MPSNNGradientState",
    "MPSNNOptimizer",
    "MPSNNOptimizerAdam",
    "MPSNNOptimizerRMSProp",
    "MPSNNOptimizerStochasticGradientDescent",
    "MPSState",
    "MTLBuffer",
    "MTLCreateSystemDefaultDevice",
    "MTLDevice",
]
