"""Optimizers that update gradstate layers in place from their gradient states (MPS's ``MPSNNOptimizer``
family: ``MPSNNOptimizerStochasticGradientDescent``, ``MPSNNOptimizerRMSProp``, ``MPSNNOptimizerAdam``).

``opt.step(layer, state)`` updates a ``Convolution``'s weights and bias from its
``ConvolutionGradientState``, or an ``InstanceNormalization``'s gamma and beta from its
``InstanceNormalizationGradientState``, with MPS's rules, computed by the C++ core. Every optimizer first
clips the gradient to ``gradient_clip = (min, max)`` (unless None), multiplies it by ``gradient_rescale``,
then adds ``regularization_scale * sign(w)`` (``regularization="l1"``) or ``regularization_scale * w``
(``"l2"``). Defaults are MPS's: ``learning_rate`` 1e-3, no clipping, rescale 1, no regularization.

An optimizer keeps the vectors its rule needs (momentum, velocity, ...) and the step count per layer, in an
``OptimizerState`` that ``opt.state(layer)`` returns (made zeroed on first use); it does not keep the layer
alive. Adam's time step ``t`` is ``opt.state(layer).time_step``: the number of steps taken on that layer.
"""

from ._core import SGD, Adam, Optimizer, OptimizerState, RMSProp

__all__ = ["SGD", "Adam", "Optimizer", "OptimizerState", "RMSProp"]
