"""Convolution forward, dx, dW and db against the float64 reference, in both activation layouts."""

import gradstate as gs
import numpy as np
import pytest
import reference as ref
from conftest import (
    ConvCase,
    assert_close,
    check_conv,
    check_second_backward,
    f32,
    from_layout,
    in_layout,
    run_conv,
)

LAYOUTS = ["NHWC", "NCHW"]


# (N, H, W, I, O, kernel, stride, dilation, groups, padding, bias): strides, dilations, every padding form
# and kernel shape. Sizes are odd on purpose.
GEOMETRY = [
    (1, 7, 9, 3, 5, 3, 1, 1, 1, 0, True),
    (4, 7, 9, 3, 5, 3, 1, 1, 1, 1, False),
    (2, 8, 7, 5, 3, 1, 1, 1, 1, "valid", True),
    (2, 7, 9, 5, 3, 1, 2, 1, 1, 0, False),
    (1, 9, 11, 3, 4, 5, 1, 1, 1, 2, True),
    (2, 11, 12, 3, 4, 5, 2, 1, 1, "same", True),
    (2, 7, 9, 4, 5, (2, 3), 1, 1, 1, "same", True),
    (3, 8, 7, 4, 3, (2, 3), (2, 1), 1, 1, "same", False),
    (2, 7, 9, 3, 5, 3, 2, 1, 1, (1, 2), True),
    (2, 7, 9, 3, 5, 3, (2, 1), 2, 1, (2, 0, 1, 3), True),
    (1, 10, 9, 3, 2, 3, 1, 2, 1, "same", True),
    (2, 7, 8, 3, 2, (3, 2), 1, (2, 1), 1, "full", True),
    (1, 5, 6, 2, 3, 3, 2, 1, 1, "full", False),
    (4, 9, 7, 5, 4, 3, 2, 2, 1, "valid", True),
    (2, 6, 6, 4, 6, 3, 1, 1, 2, (0, 1, 1, 0), True),
    (1, 12, 12, 6, 6, 5, (1, 2), 1, 6, "same", True),
    (2, 7, 9, 3, 5, (2, 3), 2, 2, 1, (3, 1, 0, 2), False),
    (4, 1, 9, 3, 5, (1, 3), 1, 1, 1, "same", True),
    (1, 3, 3, 2, 3, 3, 1, 1, 1, 0, True),
    (2, 5, 5, 3, 5, 5, 1, 1, 1, "full", True),
    (1, 8, 10, 3, 4, 3, 2, 1, 1, "same", True),
    (2, 9, 9, 2, 3, 4, 3, 1, 1, "same", True),
]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("geom", GEOMETRY, ids=str)
def test_geometry(geom, layout, rng):
    n, h, w, i, o, k, stride, dilation, groups, padding, bias = geom
    check_conv(ConvCase(rng, n, h, w, i, o, k, stride, dilation, groups, padding, bias), layout)


# (I, O, groups, stride, dilation): channel counts off the SIMD widths, grouped, depthwise.
CHANNELS = [
    (3, 5, 1, 1, 1),
    (5, 17, 1, 1, 1),
    (17, 3, 1, 2, 1),
    (16, 16, 1, 1, 1),
    (4, 6, 2, 1, 1),
    (6, 4, 2, 2, 1),
    (10, 15, 5, 1, 1),
    (12, 8, 4, 1, 2),
    (4, 8, 4, 1, 1),
    (3, 3, 3, 1, 1),
    (8, 8, 8, 1, 2),
    (17, 17, 17, 2, 1),
    (16, 16, 16, 1, 1),
]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("chan", CHANNELS, ids=str)
def test_channels_and_groups(chan, layout, rng):
    i, o, groups, stride, dilation = chan
    check_conv(ConvCase(rng, 2, 7, 6, i, o, 3, stride, dilation, groups, "same", True), layout)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_without_bias_still_gives_bias_gradient(layout, rng):
    case = ConvCase(rng, 2, 5, 6, 3, 4, 3, padding=1, bias=False)
    y, _, _, db = run_conv(case, layout)
    assert_close(y, case.y_ref, what="y")
    assert db.shape == (4,)
    assert_close(db, case.db_ref(), what="db")


@pytest.fixture
def case(rng):
    return ConvCase(rng, 2, 7, 6, 4, 6, 3, stride=(2, 1), dilation=1, groups=2, padding="same")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_option_data_leaves_state_gradients_zero(case, layout):
    _, dx, dw, db = run_conv(case, layout, gs.GradientOption.DATA)
    assert_close(dx, case.dx_ref(), what="dx")
    assert not dw.any() and not db.any()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_option_weights_and_bias_returns_none(case, layout):
    _, dx, dw, db = run_conv(case, layout, gs.GradientOption.WEIGHTS_AND_BIAS)
    assert dx is None
    assert_close(dw, case.dw_ref(), what="dW")
    assert_close(db, case.db_ref(), what="db")


def test_gradients_do_not_depend_on_option(case):
    _, dx_all, dw_all, db_all = run_conv(case, "NHWC", gs.GradientOption.ALL)
    _, dx_data, _, _ = run_conv(case, "NHWC", gs.GradientOption.DATA)
    _, _, dw_wb, db_wb = run_conv(case, "NHWC", gs.GradientOption.WEIGHTS_AND_BIAS)
    np.testing.assert_array_equal(dx_data, dx_all)
    np.testing.assert_array_equal(dw_wb, dw_all)
    np.testing.assert_array_equal(db_wb, db_all)


def test_default_option_is_all(case):
    conv = case.conv()
    y, state = conv.forward(case.x)
    dx = gs.ConvolutionGradient(conv).backward(case.dy, case.x, state)
    assert_close(dx, case.dx_ref(), what="dx")
    assert_close(np.asarray(state.gradient_for_weights), case.dw_ref(), what="dW")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_second_backward_overwrites(case, layout, rng):
    check_second_backward(case, layout, rng, accumulate=False)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_accumulate_adds(case, layout, rng):
    conv = case.conv()
    x = in_layout(case.x, layout)
    _, state = conv.forward(x, layout=layout)
    grad = gs.ConvolutionGradient(conv)
    # accumulate=True on the first call adds to the zero-initialised buffers.
    grad.backward(in_layout(case.dy, layout), x, state, accumulate=True)
    assert_close(np.asarray(state.gradient_for_weights), case.dw_ref(), what="dW after the first call")
    dy2 = f32(rng.standard_normal(case.dy.shape))
    dx2 = grad.backward(in_layout(dy2, layout), x, state, accumulate=True)
    # dx is a fresh output, not accumulated.
    assert_close(from_layout(dx2, layout), case.dx_ref(dy2), what="dx")
    assert_close(np.asarray(state.gradient_for_weights), case.dw_ref() + case.dw_ref(dy2), what="dW")
    assert_close(np.asarray(state.gradient_for_biases), case.db_ref() + case.db_ref(dy2), what="db")
    # Back to the default: overwrite.
    grad.backward(in_layout(dy2, layout), x, state)
    assert_close(np.asarray(state.gradient_for_weights), case.dw_ref(dy2), what="dW after overwrite")


def run_raw(case, x, w, b, dy, layout):
    conv = gs.Convolution(
        w, bias=b, stride=case.stride, dilation=case.dilation, groups=case.groups, padding=case.padding
    )
    y, state = conv.forward(x, layout=layout)
    dx = gs.ConvolutionGradient(conv).backward(dy, x, state)
    return (
        np.array(y),
        np.array(dx),
        np.array(state.gradient_for_weights, copy=True),
        np.array(state.gradient_for_biases, copy=True),
    )


def noncontiguous(a):
    """The same values as a, in a strided (every other element of a larger array) view."""
    big = np.zeros((*a.shape[:-1], 2 * a.shape[-1]), a.dtype)
    big[..., ::2] = a
    v = big[..., ::2]
    assert not v.flags.c_contiguous and np.array_equal(v, a)
    return v


VARIANTS = {
    "x_float64": lambda c: dict(x=c.x.astype(np.float64)),
    "x_float16": lambda c: dict(x=c.x.astype(np.float16)),
    "x_strided": lambda c: dict(x=noncontiguous(c.x)),
    "x_fortran": lambda c: dict(x=np.asfortranarray(c.x)),
    "x_list": lambda c: dict(x=c.x.tolist()),
    "x_nchw_view": lambda c: dict(x=c.x.transpose(0, 3, 1, 2), dy=c.dy.transpose(0, 3, 1, 2), layout="NCHW"),
    "w_float64_strided": lambda c: dict(w=noncontiguous(c.w.astype(np.float64))),
    "w_fortran_b_float64": lambda c: dict(w=np.asfortranarray(c.w), b=c.b.astype(np.float64)),
    "dy_float64_strided": lambda c: dict(dy=noncontiguous(c.dy.astype(np.float64))),
    "dy_float16": lambda c: dict(dy=c.dy.astype(np.float16)),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_input_conversions_give_same_results(case, variant):
    args = dict(x=case.x, w=case.w, b=case.b, dy=case.dy, layout="NHWC")
    args.update(VARIANTS[variant](case))
    actual = run_raw(case, **args)
    # The same values, already float32 and C-contiguous: what the package should convert the inputs to.
    converted = {k: (v if k == "layout" else f32(v)) for k, v in args.items()}
    expected = run_raw(case, **converted)
    for name, a, e in zip(("y", "dx", "dW", "db"), actual, expected):
        np.testing.assert_array_equal(a, e, err_msg=name)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_nan_and_inf_in_x_propagate(layout, rng):
    case = ConvCase(rng, 2, 7, 8, 3, 4, 3, padding=1)
    case.x[0, 3, 4, 1] = np.nan
    case.x[1, 2, 5, 2] = np.inf
    case.y_ref = ref.conv2d(case.x, case.w, case.b, 1, 1, 1, case.pads)
    y, dx, dw, db = run_conv(case, layout)
    assert np.isnan(y).any() and np.isinf(y).any()
    assert_close(y, case.y_ref, what="y")
    assert_close(dx, case.dx_ref(), what="dx")
    assert_close(dw, case.dw_ref(), what="dW")
    assert_close(db, case.db_ref(), what="db")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("where", ["x", "dy", "w"])
def test_nan_and_inf_on_winograd_layers_land_where_the_direct_sums_put_them(layout, stride, where, rng):
    """Dense 3x3 layers of 16 channels or more take Winograd's transforms for y, dx and (at stride 1) dW,
    which mix the pixels of a tile: an Inf there turns into NaN, and a NaN or Inf spreads to the tile's other
    pixels. Such outputs are computed again by direct sums."""
    case = ConvCase(rng, 2, 9, 10, 16, 17, 3, stride=stride, padding=1)
    target = {"x": case.x, "dy": case.dy, "w": case.w}[where]
    target.flat[[target.size // 7, target.size // 2, target.size - 9]] = [np.inf, -np.inf, np.nan]
    case.y_ref = ref.conv2d(case.x, case.w, case.b, stride, 1, 1, case.pads)
    y, dx, dw, db = run_conv(case, layout)
    assert not np.isfinite({"x": y, "dy": dw, "w": dx}[where]).all()
    assert_close(y, case.y_ref, what="y")
    assert_close(dx, case.dx_ref(), what="dx")
    assert_close(dw, case.dw_ref(), what="dW")
    assert_close(db, case.db_ref(), what="db")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_winograd_weight_gradient_with_an_inf_accumulates_the_direct_sums(layout, rng):
    # The first call's finite dW stays in the buffer, untouched by the transforms' NaN of the second.
    case = ConvCase(rng, 2, 9, 10, 16, 17, 3, padding=1)
    dy2 = f32(rng.standard_normal(case.dy.shape))
    dy2[1, 3, 4, 5] = np.inf
    assert np.isinf(case.dw_ref(dy2)).any()
    check_second_backward(case, layout, rng, accumulate=True, dy2=dy2)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(
    ("i", "o", "k", "stride", "dilation", "groups", "padding"),
    [
        (16, 17, 3, 1, 1, 1, 1),  # Winograd's transforms
        (17, 16, 5, 1, 2, 1, 0),  # a forward pass over dy padded with zeros
        (40, 33, 3, 2, 1, 1, 0),  # stride phases
        (16, 16, 3, 2, 1, 4, 0),  # small groups
        (16, 16, 3, 1, 1, 16, 1),  # depthwise
        (4, 5, 3, 1, 1, 1, 2),  # few channels
    ],
    ids=["winograd", "padded_dy", "phases", "groups", "depthwise", "few_channels"],
)
def test_nan_and_inf_weights_meet_the_zeros_of_padding_as_in_the_reference(
    layout, i, o, k, stride, dilation, groups, padding, rng
):
    """The reference's y multiplies the weights by the zeros that pad x, and its dx adds each weight's
    products with dy only into the input pixels its taps read. With finite weights, products with zeros
    change nothing, but 0 x Inf is NaN: dx's faster paths (over dy padded with zeros, or Winograd's
    transforms) made NaN of border pixels where the reference has ±Inf, and the depthwise and direct forward
    passes, which skip the padding, left ±Inf where the reference has NaN."""
    case = ConvCase(rng, 2, 9, 10, i, o, k, stride=stride, dilation=dilation, groups=groups, padding=padding)
    case.w.flat[[case.w.size // 3, case.w.size // 2, case.w.size - 2]] = [np.inf, -np.inf, np.nan]
    case.y_ref = ref.conv2d(case.x, case.w, case.b, stride, dilation, groups, case.pads)
    y, dx, _, _ = run_conv(case, layout)
    assert np.isinf(dx).any()
    assert_close(y, case.y_ref, what="y")
    assert_close(dx, case.dx_ref(), what="dx")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(
    ("n", "h", "w", "i", "o", "k", "stride", "groups", "padding"),
    [
        (2, 9, 10, 4, 5, 3, 1, 1, 1),
        (2, 6, 40, 8, 16, 1, 1, 1, 1),
        (2, 20, 22, 3, 16, 7, 2, 1, 3),
        (8, 7, 57, 13, 20, 3, 2, 1, 1),
        (2, 10, 6, 26, 26, 5, 1, 26, 2),
        (2, 6, 40, 16, 16, 3, 1, 16, 1),
    ],
    ids=[
        "few_channels",
        "pointwise_long_rows",
        "first_layer",
        "larger_kernel_long_rows",
        "depthwise",
        "depthwise_long_rows",
    ],
)
def test_nan_and_inf_in_dy_meet_the_zeros_of_padding_in_dw(
    layout, n, h, w, i, o, k, stride, groups, padding, rng
):
    """The reference's dW multiplies dy by the zeros that pad x: an Inf in dy at a border pixel makes NaN
    of the taps that read the padding there. The weight gradients that read x in place and the depthwise
    sweeps (at the levels without the 3x3 pairs), and in NCHW the depthwise planes of long rows, skipped the
    kernel rows in the padding, and left those taps ±Inf or finite."""
    case = ConvCase(rng, n, h, w, i, o, k, stride=stride, groups=groups, padding=padding)
    case.dy[0, 0, 0, :] = np.inf
    case.dy[1, -1, 3, 2] = -np.inf
    _, _, dw, db = run_conv(case, layout)
    with np.errstate(invalid="ignore"):  # a channel's Inf and -Inf
        dw_ref, db_ref = case.dw_ref(), case.db_ref()
    assert np.isnan(dw).any()
    assert_close(dw, dw_ref, what="dW")
    assert_close(db, db_ref, what="db")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_inf_in_x_reaches_only_the_depthwise_taps_that_read_it(layout, rng):
    """With no padding x's last column is read by the last kernel column only: an Inf there leaves the
    other columns' weight gradients finite. Rows of 75 outputs are whole vectors and a rest at every vector
    level; in NCHW they take the plane kernel (blocks of channels at the scalar level), whose rest must not
    multiply dy by pixels its taps skip."""
    case = ConvCase(rng, 2, 6, 77, 24, 24, 3, groups=24, padding=0)
    case.x[0, 2, -1, 5] = np.inf
    case.y_ref = ref.conv2d(case.x, case.w, case.b, 1, 1, 24, case.pads)
    y, dx, dw, db = run_conv(case, layout)
    assert not np.isfinite(dw[5, :, 2]).all() and np.isfinite(dw[:, :, :2]).all()
    assert_close(y, case.y_ref, what="y")
    assert_close(dx, case.dx_ref(), what="dx")
    assert_close(dw, case.dw_ref(), what="dW")
    assert_close(db, case.db_ref(), what="db")
