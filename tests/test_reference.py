"""Checks of the float64 reference itself: finite differences of its forward, and PyTorch as a second
oracle. These need only numpy (and torch, when installed), not gradstate."""

import math

import numpy as np
import pytest
import reference as ref
from conftest import to_nchw, to_nhwc


def numerical_grad(f, a, h):
    """Central differences of the scalar f with respect to every element of a (modified in place)."""
    g = np.zeros_like(a)
    flat, gflat = a.reshape(-1), g.reshape(-1)
    for k in range(flat.size):
        old = flat[k]
        flat[k] = old + h
        fp = f()
        flat[k] = old - h
        fm = f()
        flat[k] = old
        gflat[k] = (fp - fm) / (2 * h)
    return g


def close64(actual, expected, rtol):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    scale = max(np.abs(expected).max(), 1e-300)
    err = np.abs(actual - expected).max()
    assert err <= rtol * scale, f"relative error {err / scale:.3g} > {rtol:g}"


# (N, H, W, I, O, KH, KW, stride, dilation, groups, padding)
FD_CONV_CASES = [
    (2, 4, 5, 3, 2, 3, 3, 1, 1, 1, 0),
    (1, 5, 5, 2, 3, 3, 2, 2, 1, 1, 1),
    (2, 5, 4, 2, 2, 2, 2, (2, 1), 1, 1, (1, 0)),
    (1, 6, 5, 2, 2, 2, 3, 1, 2, 1, (2, 0, 1, 3)),
    (2, 4, 4, 4, 2, 3, 1, 1, 1, 2, "same"),
    (1, 5, 4, 3, 3, 3, 3, 2, 1, 3, "same"),
    (1, 3, 4, 2, 2, 2, 2, 1, (2, 1), 1, "full"),
    (1, 5, 6, 4, 6, 1, 1, 2, 1, 2, "valid"),
]


def conv_case(case, rng):
    n, h, w, i, o, kh, kw, stride, dilation, groups, padding = case
    pads = ref.resolve_padding(padding, h, w, kh, kw, stride, dilation)
    x = rng.standard_normal((n, h, w, i))
    wt = rng.standard_normal((o, kh, kw, i // groups))
    b = rng.standard_normal(o)
    y = ref.conv2d(x, wt, b, stride, dilation, groups, pads)
    r = rng.standard_normal(y.shape)
    return x, wt, b, r, stride, dilation, groups, pads


@pytest.mark.parametrize("case", FD_CONV_CASES, ids=str)
def test_conv_gradients_finite_differences(case, rng):
    x, wt, b, r, stride, dilation, groups, pads = conv_case(case, rng)

    def loss():
        return float((r * ref.conv2d(x, wt, b, stride, dilation, groups, pads)).sum())

    # The loss is linear in each argument, so the differences are exact up to rounding.
    h = 1e-3
    close64(
        ref.conv2d_input_grad(r, wt, x.shape, stride, dilation, groups, pads),
        numerical_grad(loss, x, h),
        1e-8,
    )
    close64(
        ref.conv2d_weight_grad(r, x, wt.shape, stride, dilation, groups, pads),
        numerical_grad(loss, wt, h),
        1e-8,
    )
    close64(ref.conv2d_bias_grad(r), numerical_grad(loss, b, h), 1e-8)


@pytest.mark.parametrize("gamma_beta", [(False, False), (True, True), (True, False)], ids=str)
@pytest.mark.parametrize("shape", [(2, 3, 4, 3), (1, 2, 5, 2), (3, 1, 2, 1)], ids=str)
def test_instance_norm_gradients_finite_differences(shape, gamma_beta, rng):
    eps = 1e-3
    x = rng.standard_normal(shape) + 2.0
    gamma = rng.standard_normal(shape[-1]) if gamma_beta[0] else None
    beta = rng.standard_normal(shape[-1]) if gamma_beta[1] else None
    r = rng.standard_normal(shape)
    g = gamma if gamma is not None else np.ones(shape[-1])
    bt = beta if beta is not None else np.zeros(shape[-1])

    def loss():
        return float((r * ref.instance_norm(x, g, bt, eps)[0]).sum())

    dx, dgamma, dbeta = ref.instance_norm_backward(r, x, gamma, eps)
    close64(dx, numerical_grad(loss, x, 1e-5), 1e-6)
    close64(dgamma, numerical_grad(loss, g, 1e-5), 1e-6)
    close64(dbeta, numerical_grad(loss, bt, 1e-5), 1e-6)


def test_instance_norm_statistics(rng):
    x = rng.standard_normal((2, 3, 5, 4)) * 3 + 7
    y, mean, inv_std = ref.instance_norm(x, None, None, 0.0)
    np.testing.assert_allclose(mean, x.mean(axis=(1, 2)))
    np.testing.assert_allclose(inv_std, 1 / x.std(axis=(1, 2)))
    np.testing.assert_allclose(y.mean(axis=(1, 2)), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=(1, 2)), 1, rtol=1e-12)


@pytest.mark.parametrize(
    ("padding", "size", "k", "stride", "dilation", "expected"),
    [
        (0, 7, 3, 1, 1, (0, 0)),
        (2, 7, 3, 1, 1, (2, 2)),
        ("valid", 7, 5, 2, 2, (0, 0)),
        ("full", 7, 3, 1, 1, (2, 2)),
        ("full", 7, 3, 2, 2, (4, 4)),
        ("same", 7, 3, 1, 1, (1, 1)),
        ("same", 7, 2, 1, 1, (1, 0)),  # odd remainder goes on top/left
        ("same", 8, 3, 2, 1, (1, 0)),
        ("same", 7, 3, 2, 1, (1, 1)),
        ("same", 9, 4, 2, 1, (2, 1)),
        ("same", 5, 1, 2, 1, (0, 0)),
        ("same", 7, 3, 1, 2, (2, 2)),
        ("same", 4, 5, 3, 1, (2, 2)),
        ("same", 2, 1, 3, 1, (0, 0)),  # the formula is negative here: clamped at 0
    ],
)
def test_resolve_padding_table(padding, size, k, stride, dilation, expected):
    assert ref.resolve_padding(padding, size, size, k, k, stride, dilation) == expected * 2


def test_resolve_padding_tuples():
    assert ref.resolve_padding((1, 2), 5, 5, 3, 3) == (1, 1, 2, 2)
    assert ref.resolve_padding((0, 1, 2, 3), 5, 5, 3, 3) == (0, 1, 2, 3)
    assert ref.resolve_padding("same", 7, 9, 2, 3, (2, 1), 1) == (1, 0, 1, 1)


@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("dilation", [1, 2])
@pytest.mark.parametrize("k", [1, 2, 3, 4])
@pytest.mark.parametrize("size", [5, 6, 7])
def test_same_and_full_output_sizes(size, k, stride, dilation):
    x = np.zeros((1, size, size, 1))
    w = np.zeros((1, k, k, 1))
    pads = ref.resolve_padding("same", size, size, k, k, stride, dilation)
    assert ref.conv2d(x, w, None, stride, dilation, 1, pads).shape[1] == math.ceil(size / stride)
    pads = ref.resolve_padding("full", size, size, k, k, stride, dilation)
    assert (
        ref.conv2d(x, w, None, stride, dilation, 1, pads).shape[1]
        == (size + (k - 1) * dilation - 1) // stride + 1
    )


def test_conv_matches_direct_sum(rng):
    # A literal transcription of the API formula with Python loops, for one small grouped case.
    n, h, w, i, o, kh, kw, groups = 1, 4, 5, 4, 2, 2, 3, 2
    stride, dilation, pads = (2, 1), (1, 2), (1, 0, 2, 1)
    x = rng.standard_normal((n, h, w, i))
    wt = rng.standard_normal((o, kh, kw, i // groups))
    b = rng.standard_normal(o)
    y = ref.conv2d(x, wt, b, stride, dilation, groups, pads)
    ig, og = i // groups, o // groups
    expected = np.zeros_like(y)
    for oh in range(y.shape[1]):
        for ow in range(y.shape[2]):
            for oc in range(o):
                s = b[oc]
                g = oc // og
                for a in range(kh):
                    for c in range(kw):
                        r = oh * stride[0] - pads[0] + a * dilation[0]
                        q = ow * stride[1] - pads[2] + c * dilation[1]
                        if 0 <= r < h and 0 <= q < w:
                            s += wt[oc, a, c] @ x[0, r, q, g * ig : (g + 1) * ig]
                expected[0, oh, ow, oc] = s
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


# PyTorch as a second oracle ------------------------------------------------------------------------------

TORCH_CONV_CASES = [
    *FD_CONV_CASES,
    (3, 7, 9, 5, 17, 3, 3, 1, 1, 1, "same"),
    (2, 8, 7, 6, 4, 2, 3, 2, 1, 2, "same"),
    (2, 7, 9, 6, 6, 3, 3, 2, 2, 6, "same"),
    (1, 6, 6, 3, 5, 5, 5, 1, 1, 1, "full"),
    (2, 9, 7, 4, 8, 3, 2, (2, 1), (1, 2), 4, (2, 1, 0, 3)),
]


def torch_conv(torch, x, wt, b, stride, dilation, groups, pads):
    F = torch.nn.functional
    xt = torch.tensor(to_nchw(x), requires_grad=True)
    wtt = torch.tensor(np.ascontiguousarray(wt.transpose(0, 3, 1, 2)), requires_grad=True)
    bt = torch.tensor(b, requires_grad=True)
    top, bottom, left, right = pads
    xp = F.pad(xt, (left, right, top, bottom))
    y = F.conv2d(xp, wtt, bt, stride=stride, dilation=dilation, groups=groups)
    return xt, wtt, bt, y


@pytest.mark.parametrize("case", TORCH_CONV_CASES, ids=str)
def test_conv_against_torch(case, rng, torch):
    x, wt, b, r, stride, dilation, groups, pads = conv_case(case, rng)
    xt, wtt, bt, yt = torch_conv(torch, x, wt, b, stride, dilation, groups, pads)
    yt.backward(torch.tensor(to_nchw(r)))
    close64(ref.conv2d(x, wt, b, stride, dilation, groups, pads), to_nhwc(yt.detach().numpy()), 1e-12)
    close64(
        ref.conv2d_input_grad(r, wt, x.shape, stride, dilation, groups, pads), to_nhwc(xt.grad.numpy()), 1e-12
    )
    close64(
        ref.conv2d_weight_grad(r, x, wt.shape, stride, dilation, groups, pads),
        wtt.grad.numpy().transpose(0, 2, 3, 1),
        1e-12,
    )
    close64(ref.conv2d_bias_grad(r), bt.grad.numpy(), 1e-12)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_same_matches_torch_same_for_odd_kernels(k, rng, torch):
    # For stride 1 and an odd kernel the total padding is even, so the MPS and PyTorch policies agree.
    x = rng.standard_normal((2, 6, 7, 3))
    wt = rng.standard_normal((4, k, k, 3))
    pads = ref.resolve_padding("same", 6, 7, k, k, 1, 1)
    expected = torch.nn.functional.conv2d(
        torch.tensor(to_nchw(x)), torch.tensor(np.ascontiguousarray(wt.transpose(0, 3, 1, 2))), padding="same"
    )
    close64(ref.conv2d(x, wt, None, 1, 1, 1, pads), to_nhwc(expected.numpy()), 1e-12)


@pytest.mark.parametrize("gamma_beta", [(False, False), (True, True), (True, False), (False, True)], ids=str)
@pytest.mark.parametrize(
    ("shape", "eps"), [((2, 5, 7, 3), 1e-5), ((4, 3, 2, 17), 1e-3), ((1, 16, 16, 2), 0.1)]
)
def test_instance_norm_against_torch(shape, eps, gamma_beta, rng, torch):
    c = shape[-1]
    x = rng.standard_normal(shape) * 2 + 5
    gamma = rng.standard_normal(c) if gamma_beta[0] else None
    beta = rng.standard_normal(c) if gamma_beta[1] else None
    r = rng.standard_normal(shape)

    xt = torch.tensor(to_nchw(x), requires_grad=True)
    gt = torch.tensor(gamma if gamma is not None else np.ones(c), requires_grad=True)
    bt = torch.tensor(beta if beta is not None else np.zeros(c), requires_grad=True)
    yt = torch.nn.functional.instance_norm(xt, weight=gt, bias=bt, eps=eps)
    yt.backward(torch.tensor(to_nchw(r)))

    y, mean, inv_std = ref.instance_norm(x, gamma, beta, eps)
    dx, dgamma, dbeta = ref.instance_norm_backward(r, x, gamma, eps)
    close64(y, to_nhwc(yt.detach().numpy()), 1e-10)
    close64(dx, to_nhwc(xt.grad.numpy()), 1e-10)
    close64(dgamma, gt.grad.numpy(), 1e-10)
    close64(dbeta, bt.grad.numpy(), 1e-10)
    xn = xt.detach()
    close64(mean, xn.mean(dim=(2, 3)).numpy(), 1e-12)
    close64(inv_std, (1 / torch.sqrt(xn.var(dim=(2, 3), unbiased=False) + eps)).numpy(), 1e-12)
