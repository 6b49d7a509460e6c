"""Float64 numpy reference for gradstate's kernels.

Written from the formulas in the API document, independently of the package, so that the tests compare
the package against the mathematics rather than against itself. Activations are NHWC, weights OHWI
``(O, KH, KW, I // groups)``. Everything is computed in float64.
"""

import numpy as np


def _pair(v):
    """An int or a 2-sequence -> (vertical, horizontal)."""
    if isinstance(v, (int, np.integer)):
        return int(v), int(v)
    a, b = v
    return int(a), int(b)


def resolve_padding(padding, in_h, in_w, kh, kw, stride=1, dilation=1):
    """Padding spec -> (top, bottom, left, right).

    - int p: p on every side; (ph, pw): ph top and bottom, pw left and right; 4-tuple: as given.
    - "valid": no padding. "full": (k-1)*d on each side.
    - "same" (MPS default policy, AddRemainderToTopLeft): out = ceil(in/s),
      total = max((out-1)*s + (k-1)*d + 1 - in, 0), top = ceil(total/2), bottom = total - top.
    """
    sy, sx = _pair(stride)
    dy, dx = _pair(dilation)
    if isinstance(padding, str):
        if padding == "valid":
            return 0, 0, 0, 0
        if padding == "full":
            return (kh - 1) * dy, (kh - 1) * dy, (kw - 1) * dx, (kw - 1) * dx
        if padding == "same":
            out = []
            for n, k, s, d in ((in_h, kh, sy, dy), (in_w, kw, sx, dx)):
                o = -(-n // s)
                total = max((o - 1) * s + (k - 1) * d + 1 - n, 0)
                first = -(-total // 2)
                out += [first, total - first]
            return tuple(out)
        raise ValueError(f"unknown padding {padding!r}")
    if isinstance(padding, (int, np.integer)):
        return (int(padding),) * 4
    padding = tuple(int(p) for p in padding)
    if len(padding) == 2:
        return padding[0], padding[0], padding[1], padding[1]
    if len(padding) == 4:
        return padding
    raise ValueError(f"bad padding {padding!r}")


def _geometry(x_shape, w_shape, stride, dilation, pads):
    n, h, w, c = x_shape
    o, kh, kw, _ = w_shape
    sy, sx = _pair(stride)
    dy, dx = _pair(dilation)
    top, bottom, left, right = pads
    hp, wp = h + top + bottom, w + left + right
    oh = (hp - (kh - 1) * dy - 1) // sy + 1
    ow = (wp - (kw - 1) * dx - 1) // sx + 1
    assert oh >= 1 and ow >= 1, "kernel larger than the padded input"
    return sy, sx, dy, dx, hp, wp, oh, ow


def _tap(kh, kw, sy, sx, dy, dx, oh, ow):
    """Slices of the padded input read by tap (kh, kw) for every output pixel."""
    return (
        slice(kh * dy, kh * dy + (oh - 1) * sy + 1, sy),
        slice(kw * dx, kw * dx + (ow - 1) * sx + 1, sx),
    )


def conv2d(x, w, b, stride, dilation, groups, pads):
    """y[n,oh,ow,o] = b[o] + sum_{kh,kw,i<Ig} W[o,kh,kw,i] * xpad[n, oh*sy + kh*dy, ow*sx + kw*dx, g*Ig + i]

    with g = o // (O/groups) and xpad the input zero-padded by pads = (top, bottom, left, right).
    """
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    n, h, wd, c = x.shape
    o, kh_, kw_, ig = w.shape
    assert c == ig * groups and o % groups == 0
    sy, sx, dy, dx, _, _, oh, ow = _geometry(x.shape, w.shape, stride, dilation, pads)
    top, bottom, left, right = pads
    xp = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    wg = w.reshape(groups, o // groups, kh_, kw_, ig)
    y = np.zeros((n, oh, ow, groups, o // groups))
    for kh in range(kh_):
        for kw in range(kw_):
            rows, cols = _tap(kh, kw, sy, sx, dy, dx, oh, ow)
            xs = xp[:, rows, cols, :].reshape(n, oh, ow, groups, ig)
            y += np.einsum("nhwgi,goi->nhwgo", xs, wg[:, :, kh, kw, :])
    y = y.reshape(n, oh, ow, o)
    if b is not None:
        y += np.asarray(b, np.float64)
    return y


def conv2d_weight_grad(dy, x, w_shape, stride, dilation, groups, pads):
    """dW[o,kh,kw,i] = sum_{n,oh,ow} dy[n,oh,ow,o] * xpad[n, oh*sy + kh*dy, ow*sx + kw*dx, g*Ig + i]."""
    dy_ = np.asarray(dy, np.float64)
    x = np.asarray(x, np.float64)
    n = x.shape[0]
    o, kh_, kw_, ig = w_shape
    sy, sx, dly, dlx, _, _, oh, ow = _geometry(x.shape, w_shape, stride, dilation, pads)
    assert dy_.shape == (n, oh, ow, o)
    top, bottom, left, right = pads
    xp = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    dyg = dy_.reshape(n, oh, ow, groups, o // groups)
    dw = np.zeros((groups, o // groups, kh_, kw_, ig))
    for kh in range(kh_):
        for kw in range(kw_):
            rows, cols = _tap(kh, kw, sy, sx, dly, dlx, oh, ow)
            xs = xp[:, rows, cols, :].reshape(n, oh, ow, groups, ig)
            dw[:, :, kh, kw, :] = np.einsum("nhwgo,nhwgi->goi", dyg, xs)
    return dw.reshape(w_shape)


def conv2d_bias_grad(dy):
    """db[o] = sum_{n,oh,ow} dy[n,oh,ow,o]."""
    return np.asarray(dy, np.float64).sum(axis=(0, 1, 2))


def conv2d_input_grad(dy, w, x_shape, stride, dilation, groups, pads):
    """dx = transposed convolution: every tap scatters W[o,kh,kw,i] * dy[n,oh,ow,o] back to the input
    pixel it read; contributions that land in the padding are dropped."""
    dy_ = np.asarray(dy, np.float64)
    w = np.asarray(w, np.float64)
    n, h, wd, c = x_shape
    o, kh_, kw_, ig = w.shape
    sy, sx, dly, dlx, hp, wp, oh, ow = _geometry(x_shape, w.shape, stride, dilation, pads)
    assert dy_.shape == (n, oh, ow, o)
    top, _, left, _ = pads
    dyg = dy_.reshape(n, oh, ow, groups, o // groups)
    wg = w.reshape(groups, o // groups, kh_, kw_, ig)
    dxp = np.zeros((n, hp, wp, c))
    for kh in range(kh_):
        for kw in range(kw_):
            rows, cols = _tap(kh, kw, sy, sx, dly, dlx, oh, ow)
            contrib = np.einsum("nhwgo,goi->nhwgi", dyg, wg[:, :, kh, kw, :])
            dxp[:, rows, cols, :] += contrib.reshape(n, oh, ow, c)
    return dxp[:, top : top + h, left : left + wd, :]


def instance_norm(x, gamma, beta, eps):
    """Per image n and channel c over the H*W pixels (NHWC):
    mean = mean_hw(x), var = mean_hw((x - mean)^2) (biased), inv_std = 1 / sqrt(var + eps),
    y = gamma[c] * (x - mean) * inv_std + beta[c]  (gamma None -> 1, beta None -> 0).
    Returns (y, mean, inv_std), the last two shaped (N, C).
    """
    x = np.asarray(x, np.float64)
    mean = x.mean(axis=(1, 2))
    var = ((x - mean[:, None, None, :]) ** 2).mean(axis=(1, 2))
    inv_std = 1.0 / np.sqrt(var + eps)
    y = (x - mean[:, None, None, :]) * inv_std[:, None, None, :]
    if gamma is not None:
        y = y * np.asarray(gamma, np.float64)
    if beta is not None:
        y = y + np.asarray(beta, np.float64)
    return y, mean, inv_std


def instance_norm_backward(dy, x, gamma, eps):
    """With xhat = (x - mean) * inv_std per (n, c):
    dbeta[c] = sum_{n,h,w} dy, dgamma[c] = sum_{n,h,w} dy * xhat,
    dx = gamma[c] * inv_std * (dy - mean_hw(dy) - xhat * mean_hw(dy * xhat)).
    Returns (dx, dgamma, dbeta).
    """
    dy_ = np.asarray(dy, np.float64)
    x = np.asarray(x, np.float64)
    _, mean, inv_std = instance_norm(x, None, None, eps)
    xhat = (x - mean[:, None, None, :]) * inv_std[:, None, None, :]
    g = np.ones(x.shape[-1]) if gamma is None else np.asarray(gamma, np.float64)
    dbeta = dy_.sum(axis=(0, 1, 2))
    dgamma = (dy_ * xhat).sum(axis=(0, 1, 2))
    mean_dy = dy_.mean(axis=(1, 2), keepdims=True)
    mean_dy_xhat = (dy_ * xhat).mean(axis=(1, 2), keepdims=True)
    dx = g * inv_std[:, None, None, :] * (dy_ - mean_dy - xhat * mean_dy_xhat)
    return dx, dgamma, dbeta
