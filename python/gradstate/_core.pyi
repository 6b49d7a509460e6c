"""Type stubs of the native module gradstate._core (re-exported by gradstate)."""

import enum
from typing import Literal

import numpy as np
import numpy.typing as npt

_ArrayLike = npt.ArrayLike
_IntPair = int | tuple[int, int]
_Padding = int | tuple[int, int] | tuple[int, int, int, int] | Literal["valid", "same", "full"]
_Layout = Literal["NHWC", "NCHW"]

class Device:
    @property
    def type(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def available(self) -> bool: ...
    @property
    def unavailable_reason(self) -> str: ...

_DeviceLike = Device | Literal["cpu", "metal"] | None

def devices() -> list[Device]: ...
def default_device() -> Device: ...
def live_native_bytes() -> int: ...

class Buffer:
    @property
    def nbytes(self) -> int: ...
    @property
    def dtype(self) -> np.dtype: ...
    @property
    def shape(self) -> tuple[int, ...]: ...
    @property
    def device(self) -> Device: ...
    def __buffer__(self, flags: int, /) -> memoryview: ...

class GradientOption(enum.IntEnum):
    DATA = 1
    WEIGHTS_AND_BIAS = 2
    ALL = 3

class WeightsLayout(enum.IntEnum):
    OHWI = 0

class GradientState:
    read_count: int
    @property
    def is_temporary(self) -> bool: ...
    @property
    def layout(self) -> str: ...

class Convolution:
    def __init__(
        self,
        weights: _ArrayLike,
        bias: _ArrayLike | None = None,
        stride: _IntPair = 1,
        dilation: _IntPair = 1,
        groups: int = 1,
        padding: _Padding = 0,
        device: _DeviceLike = None,
    ) -> None: ...
    def forward(
        self, x: _ArrayLike, layout: _Layout = "NHWC", *, temporary_state: bool = False
    ) -> tuple[np.ndarray, ConvolutionGradientState]: ...
    @property
    def kernel_height(self) -> int: ...
    @property
    def kernel_width(self) -> int: ...
    @property
    def input_feature_channels(self) -> int: ...
    @property
    def output_feature_channels(self) -> int: ...
    @property
    def groups(self) -> int: ...
    @property
    def stride(self) -> tuple[int, int]: ...
    @property
    def dilation(self) -> tuple[int, int]: ...
    @property
    def padding(self) -> str | tuple[int, int, int, int]: ...
    @property
    def has_bias(self) -> bool: ...
    @property
    def device(self) -> Device: ...

class ConvolutionGradientState(GradientState):
    @property
    def gradient_for_weights(self) -> Buffer: ...
    @property
    def gradient_for_biases(self) -> Buffer: ...
    @property
    def gradient_for_weights_layout(self) -> WeightsLayout: ...
    @property
    def convolution(self) -> Convolution: ...
    @property
    def source_width(self) -> int: ...
    @property
    def source_height(self) -> int: ...

class ConvolutionGradient:
    option: GradientOption
    def __init__(self, convolution: Convolution, option: GradientOption = GradientOption.ALL) -> None: ...
    def backward(
        self,
        dy: _ArrayLike,
        x: _ArrayLike,
        state: ConvolutionGradientState,
        *,
        accumulate: bool = False,
        layout: _Layout | None = None,
    ) -> np.ndarray | None: ...
    @property
    def convolution(self) -> Convolution: ...

class InstanceNormalization:
    def __init__(
        self,
        num_channels: int,
        gamma: _ArrayLike | None = None,
        beta: _ArrayLike | None = None,
        epsilon: float = 1e-5,
        device: _DeviceLike = None,
    ) -> None: ...
    def forward(
        self, x: _ArrayLike, layout: _Layout = "NHWC", *, temporary_state: bool = False
    ) -> tuple[np.ndarray, InstanceNormalizationGradientState]: ...
    @property
    def num_channels(self) -> int: ...
    @property
    def epsilon(self) -> float: ...
    @property
    def device(self) -> Device: ...

class InstanceNormalizationGradientState(GradientState):
    @property
    def gradient_for_gamma(self) -> Buffer: ...
    @property
    def gradient_for_beta(self) -> Buffer: ...
    @property
    def gamma(self) -> Buffer | None: ...
    @property
    def beta(self) -> Buffer | None: ...
    @property
    def mean(self) -> Buffer: ...
    @property
    def inv_std(self) -> Buffer: ...
    @property
    def instance_normalization(self) -> InstanceNormalization: ...

class InstanceNormalizationGradient:
    def __init__(self, instance_normalization: InstanceNormalization) -> None: ...
    def backward(
        self,
        dy: _ArrayLike,
        x: _ArrayLike,
        state: InstanceNormalizationGradientState,
        *,
        accumulate: bool = False,
        layout: _Layout | None = None,
    ) -> np.ndarray: ...
    @property
    def instance_normalization(self) -> InstanceNormalization: ...
