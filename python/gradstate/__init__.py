"""gradstate: Metal Performance Shaders-style training kernels and gradient states for numpy.

Convolution and instance normalization, forward and backward, with the weight, bias, gamma and beta
gradients delivered in gradient states whose buffers numpy can view without copying, and optimizers
(``gradstate.optim``) that train the layers from those states. See ``gradstate.mps`` for the same classes
under their MPS names.
"""

from importlib.metadata import PackageNotFoundError, version

from . import _reprs, optim  # noqa: F401 (_reprs gives the core's classes their repr())
from ._core import (
    Buffer,
    Convolution,
    ConvolutionGradient,
    ConvolutionGradientState,
    ConvolutionWeightsAndBiasesState,
    Device,
    GradientOption,
    GradientState,
    InstanceNormalization,
    InstanceNormalizationGradient,
    InstanceNormalizationGradientState,
    NormalizationGammaAndBetaState,
    WeightsLayout,
    cpu_info,
    default_device,
    devices,
    get_num_threads,
    live_native_bytes,
    set_num_threads,
)

try:
    __version__ = version("gradstate")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "Buffer",
    "Convolution",
    "ConvolutionGradient",
    "ConvolutionGradientState",
    "ConvolutionWeightsAndBiasesState",
    "Device",
    "GradientOption",
    "GradientState",
    "InstanceNormalization",
    "InstanceNormalizationGradient",
    "InstanceNormalizationGradientState",
    "NormalizationGammaAndBetaState",
    "WeightsLayout",
    "__version__",
    "cpu_info",
    "default_device",
    "devices",
    "get_num_threads",
    "live_native_bytes",
    "optim",
    "set_num_threads",
]
