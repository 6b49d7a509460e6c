"""repr() of the core's layers, gradients, states and optimizers: the class and the properties that describe
the object, as keyword arguments (the bound C++ classes would otherwise show only an address)."""

import enum

from . import _core

# The optimizers' own settings first, then those every optimizer has.
_OPTIMIZER = ("gradient_rescale", "gradient_clip", "regularization", "regularization_scale")

_DESCRIBED_BY = {
    _core.Convolution: (
        "kernel_height",
        "kernel_width",
        "input_feature_channels",
        "output_feature_channels",
        "groups",
        "stride",
        "dilation",
        "padding",
        "has_bias",
        "device",
    ),
    _core.InstanceNormalization: ("num_channels", "epsilon", "device"),
    _core.ConvolutionGradient: ("convolution", "option"),
    _core.InstanceNormalizationGradient: ("instance_normalization",),
    _core.ConvolutionGradientState: ("layout", "is_temporary", "read_count", "source_height", "source_width"),
    _core.InstanceNormalizationGradientState: ("layout", "is_temporary", "read_count"),
    _core.ConvolutionWeightsAndBiasesState: ("weights", "biases"),
    _core.NormalizationGammaAndBetaState: ("gamma", "beta"),
    _core.SGD: ("learning_rate", "momentum_scale", "use_nesterov_momentum", *_OPTIMIZER),
    _core.RMSProp: ("learning_rate", "decay", "epsilon", *_OPTIMIZER),
    _core.Adam: ("learning_rate", "beta1", "beta2", "epsilon", "amsgrad", *_OPTIMIZER),
    _core.OptimizerState: ("time_step",),
}


def _shown(value):
    """A device by its type, an enum member by its qualified name, anything else by its repr()."""
    if isinstance(value, _core.Device):
        return repr(value.type)
    if isinstance(value, enum.Enum):
        return f"{type(value).__name__}.{value.name}"
    return repr(value)


def _repr_of(names):
    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{n}={_shown(getattr(self, n))}' for n in names)})"

    return __repr__


for _cls, _names in _DESCRIBED_BY.items():
    _cls.__repr__ = _repr_of(_names)
