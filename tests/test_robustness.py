"""Inputs at the edges of what the kernels can take, and processes that fork: a clear Python error or the
right result, never a crash or a hang."""

import multiprocessing

import gradstate as gs
import numpy as np
import pytest
from conftest import f32


def test_output_too_large_to_exist_raises_memory_error():
    # 2**31 - 2 padding on each side makes y about 2**62 elements: no buffer can hold them.
    conv = gs.Convolution(np.ones((4, 1, 1, 1), np.float32), padding=2**30 - 1)
    with pytest.raises(MemoryError):
        conv.forward(np.ones((1, 1, 1, 1), np.float32))


def test_padded_size_beyond_32_bits_is_refused():
    conv = gs.Convolution(np.ones((2, 3, 1, 1), np.float32), groups=2, dilation=(2**30, 1))
    with pytest.raises(ValueError, match=r"^x: .*2\*\*31"):
        conv.forward(np.ones((1, 1, 1, 2), np.float32))


def test_input_that_cannot_be_converted_raises_memory_error():
    conv = gs.Convolution(np.ones((1, 1, 1, 1), np.float32))
    huge = np.broadcast_to(np.float64(1.0), (2**16, 2**16, 2**16, 1))  # a view; its float32 copy cannot exist
    with pytest.raises(MemoryError):
        conv.forward(huge)


def test_grouped_layer_with_huge_padding(rng):
    # Whole padded planes would need terabytes; only input pixel (0, 0) is ever read, by output pixel (1, 1)
    # at tap (0, 0).
    x = f32(rng.standard_normal((4, 1, 1, 2)))
    w = f32(rng.standard_normal((2, 3, 3, 1)))
    conv = gs.Convolution(w, groups=2, stride=100000, padding=100000)
    y, state = conv.forward(x)
    dy = f32(rng.standard_normal(y.shape))
    gs.ConvolutionGradient(conv, option=gs.GradientOption.WEIGHTS_AND_BIAS).backward(dy, x, state)
    expected = np.zeros(w.shape)
    expected[:, 0, 0, 0] = np.einsum("nc,nc->c", dy[:, 1, 1, :].astype(np.float64), x[:, 0, 0, :])
    np.testing.assert_allclose(np.asarray(state.gradient_for_weights), expected, rtol=1e-5, atol=1e-6)


def _forward_in_child(queue):
    norm = gs.InstanceNormalization(3)
    y, _ = norm.forward(np.arange(2 * 4 * 4 * 3, dtype=np.float32).reshape(2, 4, 4, 3))
    queue.put(np.asarray(y).copy())


def test_kernels_run_in_a_forked_child():
    # The child inherits the parent's thread pool but not its threads; it must make its own.
    gs.InstanceNormalization(3).forward(np.ones((2, 4, 4, 3), np.float32))  # the parent's pool exists
    expected, _ = gs.InstanceNormalization(3).forward(np.arange(96, dtype=np.float32).reshape(2, 4, 4, 3))
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_forward_in_child, args=(queue,))
    child.start()
    child.join(timeout=60)
    if child.is_alive():
        child.kill()
        pytest.fail("a kernel in a forked child hung")
    assert child.exitcode == 0
    np.testing.assert_array_equal(queue.get(timeout=5), expected)
