"""Thread count control, and results that are bitwise identical for any thread count.

The CPU kernels split their work by the problem's shape only and add partial sums in a fixed order, so
changing the number of threads must not change a single bit of any output. The shapes below make every
kernel split its work into many tasks: the weight gradient's pixel segments, column blocks, blocks of
groups, bands of rows and Winograd's blocks of tiles, and instance norm's planes, pixel blocks and channel
blocks.
"""

import threading

import gradstate as gs
import numpy as np
import pytest
import reference as ref
from conftest import (
    ConvCase,
    assert_close,
    assert_same_bits,
    call_in_child,
    f32,
    from_layout,
    in_layout,
    run_conv,
)

# The CPU backend's thread pool is under test, whatever the default device.
pytestmark = pytest.mark.usefixtures("on_cpu")

LAYOUTS = ["NHWC", "NCHW"]
THREAD_COUNTS = [1, 2, 3]


@pytest.fixture
def restore_threads():
    """Puts the thread count back as it was, so that other tests run with the configured count."""
    before = gs.get_num_threads()
    yield before
    gs.set_num_threads(before)


def test_set_get_round_trip(restore_threads):
    for n in (1, 3, 2, restore_threads + 1):
        gs.set_num_threads(n)
        assert gs.get_num_threads() == n
        assert gs.cpu_info()["num_threads"] == n


@pytest.mark.parametrize(
    "value, exc",
    [(0, ValueError), (-1, ValueError), (1.5, TypeError), ("2", TypeError)],
    ids=["zero", "negative", "float", "str"],
)
def test_set_num_threads_rejects(value, exc, restore_threads):
    gs.set_num_threads(2)
    with pytest.raises(exc, match=r"^n: ") as info:
        gs.set_num_threads(value)
    assert type(info.value) is exc
    # A refused value leaves the count alone.
    assert gs.get_num_threads() == 2


def assert_same_for_every_thread_count(compute):
    """compute() -> {name: float32 array}; runs it with each thread count (and the last one twice, as
    races would show up between repeated runs) and checks that every output has the same bits as with one
    thread. Returns the one-thread outputs."""
    runs = []
    for n in [*THREAD_COUNTS, THREAD_COUNTS[-1]]:
        gs.set_num_threads(n)
        assert gs.get_num_threads() == n
        runs.append((n, compute()))
    _, single = runs[0]
    for n, outputs in runs[1:]:
        assert outputs.keys() == single.keys()
        for name, value in outputs.items():
            assert_same_bits(value, single[name], what=f"{name} with {n} threads vs 1 thread")
    return single


# (N, H, W, I, O, kernel, groups, stride): each path split into many work items.
CONV_SHAPES = [
    # 4096 pixels and 400 columns (one column block): the pixel sum is split into segments. (5x5, as
    # 3x3 layers of this size take Winograd's way; one image, as four would read x in place.)
    pytest.param((1, 64, 64, 16, 16, 5, 1, 1), id="gemm_pixel_segments"),
    # 3200 columns: seven column blocks.
    pytest.param((2, 16, 16, 128, 24, 5, 1, 1), id="gemm_column_blocks"),
    # dx at stride 2 in stride phases, each a forward GEMM of many tasks writing every other pixel.
    pytest.param((2, 33, 35, 64, 32, 5, 1, 2), id="dx_stride_phases"),
    # Winograd: the forward pass's blocks shared out by thread count (at stride 2 also dx's, "same" padding
    # being odd both ways); the weight gradient's parts of the tiles, each with its own dU and db summed in
    # order (4 parts here, 8 parts of several blocks next).
    pytest.param((4, 20, 18, 24, 40, 3, 1, 1), id="winograd"),
    pytest.param((4, 20, 18, 24, 40, 3, 1, 2), id="winograd_stride2"),
    pytest.param((1, 120, 120, 17, 20, 3, 1, 1), id="winograd_weights_parts_of_blocks"),
    # Winograd with few tiles: below 1 MiB of transformed weights, one part with its output channels in
    # groups; above it, all tiles transformed in chunks, each summing its dy for db (summed in order), and dW
    # in blocks shared out by thread count (216 tiles: GEMMs over 128 tiles, then the last 88 added).
    pytest.param((1, 10, 12, 120, 130, 3, 1, 1), id="winograd_weights_output_groups"),
    pytest.param((3, 15, 17, 130, 140, 3, 1, 1), id="winograd_weights_few_tiles"),
    # 3 input channels: the in-place path, two bands of rows per image; a 1x1 layer whose partials bound
    # the tasks to fewer than the images (tasks of two images); and a 3x3 layer of 13 channels, one task
    # per image.
    pytest.param((2, 70, 64, 3, 16, 7, 1, 1), id="in_place_bands"),
    pytest.param((8, 5, 57, 13, 20, 3, 1, 2), id="in_place_3x3_stride2"),
    pytest.param((34, 1, 32, 240, 256, 1, 1, 1), id="in_place_tasks_of_two_images"),
    # 40 groups: more than one block of groups at every vector width; and groups of 4 channels, one task per
    # image and block of groups where they are packed, bands of rows where they take the depthwise sweeps
    # (3x3 on AVX2 and AVX-512).
    pytest.param((3, 30, 12, 40, 40, 3, 40, 1), id="depthwise40"),
    # At stride 2 in NCHW: a task per image and block of channels (3 blocks of 16 here on AVX2).
    pytest.param((3, 40, 40, 48, 48, 3, 48, 2), id="depthwise48_stride2_blocks"),
    pytest.param((3, 10, 10, 32, 32, 3, 8, 1), id="grouped_4_4_per_group"),
]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", CONV_SHAPES)
def test_convolution_bits_do_not_depend_on_thread_count(shape, layout, rng, restore_threads):
    n, h, w, i, o, k, groups, stride = shape
    case = ConvCase(rng, n, h, w, i, o, k, stride=stride, groups=groups, padding="same")

    def compute():
        y, dx, dw, db = run_conv(case, layout)
        return {"y": y, "dx": dx, "dW": dw, "db": db}

    single = assert_same_for_every_thread_count(compute)
    assert_close(single["y"], case.y_ref, what="y")
    assert_close(single["dx"], case.dx_ref(), what="dx")
    assert_close(single["dW"], case.dw_ref(), what="dW")
    assert_close(single["db"], case.db_ref(), what="db")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(
    "shape",
    [
        # 576-pixel planes (more than one 512-pixel block) and 300 channels (two NHWC channel blocks).
        (2, 24, 24, 300),
        # NHWC images of 5 MB in x and in dy, which one thread sweeps an image at a time and two or three
        # threads share (the backward pass from 2 threads, the forward from 3), in runs of the 7 pixel
        # blocks (the last of 64 pixels); 401 channels end in a block of 145.
        (2, 56, 56, 401),
    ],
    ids=str,
)
# With outliers, every third channel's first pixel lies 80 spreads from its plane's mean: the forward pass's
# shift (the mean of a sample that takes it) lies 5 spreads off, and those planes' sums are taken again.
@pytest.mark.parametrize("outliers", [False, True], ids=["", "outliers"])
def test_instance_norm_bits_do_not_depend_on_thread_count(shape, outliers, layout, rng, restore_threads):
    c = shape[-1]
    spread = rng.uniform(0.5, 2.0, c)
    x = f32(rng.standard_normal(c) + rng.standard_normal(shape) * spread)
    if outliers:
        x[:, 0, 0, ::3] += f32(80 * spread[::3])
    gamma, beta = f32(rng.standard_normal(c)), f32(rng.standard_normal(c))
    dy = f32(rng.standard_normal(shape))

    def compute():
        inorm = gs.InstanceNormalization(c, gamma=gamma, beta=beta)
        xl = in_layout(x, layout)
        y, state = inorm.forward(xl, layout=layout)
        dx = gs.InstanceNormalizationGradient(inorm).backward(in_layout(dy, layout), xl, state)
        return {
            "y": from_layout(y, layout),
            "dx": from_layout(dx, layout),
            "dgamma": np.array(state.gradient_for_gamma, copy=True),
            "dbeta": np.array(state.gradient_for_beta, copy=True),
            "mean": np.array(state.mean, copy=True),
            "inv_std": np.array(state.inv_std, copy=True),
        }

    single = assert_same_for_every_thread_count(compute)
    y_ref, mean_ref, inv_std_ref = ref.instance_norm(x, gamma, beta, 1e-5)
    dx_ref, dgamma_ref, dbeta_ref = ref.instance_norm_backward(dy, x, gamma, 1e-5)
    assert_close(single["y"], y_ref, what="y")
    assert_close(single["dx"], dx_ref, what="dx")
    assert_close(single["dgamma"], dgamma_ref, what="dgamma")
    assert_close(single["dbeta"], dbeta_ref, what="dbeta")
    assert_close(single["mean"], mean_ref, what="mean")
    assert_close(single["inv_std"], inv_std_ref, what="inv_std")


# GRADSTATE_NUM_THREADS is read once per process, so these run in a child process.


def test_environment_sets_thread_count():
    assert call_in_child(
        "(gs.get_num_threads(), gs.cpu_info()['num_threads'])", GRADSTATE_NUM_THREADS="3"
    ) == ("returned (3, 3)")


@pytest.mark.parametrize("value", ["zero", "0", "-2", "2.5"])
def test_environment_rejects_bad_thread_count(value):
    # Importing works; the first use of the thread count reports the variable and the value.
    line = call_in_child("gs.get_num_threads()", GRADSTATE_NUM_THREADS=value)
    assert line.startswith("ValueError: GRADSTATE_NUM_THREADS: "), line
    assert repr(value) in line, line


def test_resizing_between_calls_keeps_results(rng, restore_threads):
    # The pool's workers are replaced on every resize; a new worker must join only the jobs posted after
    # it started, or a call could return while a worker still writes its result.
    case = ConvCase(rng, 4, 32, 32, 16, 16, 3, groups=1, padding="same")
    gs.set_num_threads(1)
    expected = run_conv(case, "NHWC")
    for round_ in range(60):
        gs.set_num_threads(1 + round_ % 3)
        for value, reference, name in zip(run_conv(case, "NHWC"), expected, ("y", "dx", "dW", "db")):
            assert_same_bits(value, reference, what=f"{name} after resizing to {1 + round_ % 3} threads")


def test_calls_from_several_python_threads_at_once(rng, restore_threads):
    # One call at a time has the pool; the others run their tasks themselves. Calls this small end before a
    # sleeping worker wakes, so workers join some jobs late or not at all: each call must still wait for
    # every worker that joined it, and only for those.
    gs.set_num_threads(2)
    cases = [
        ConvCase(rng, 1, 6, 5, 16, 16, 3, groups=1, padding="same"),
        ConvCase(rng, 2, 9, 7, 32, 32, 3, groups=32, padding="same"),
        ConvCase(rng, 2, 20, 18, 24, 40, 3, groups=1, padding="same"),
    ]
    expected = [run_conv(case, "NHWC") for case in cases]
    failures = []

    def calls(first):
        for round_ in range(40):
            k = (first + round_) % len(cases)
            for value, reference, name in zip(
                run_conv(cases[k], "NHWC"), expected[k], ("y", "dx", "dW", "db")
            ):
                try:
                    assert_same_bits(value, reference, what=f"{name} of case {k}")
                except AssertionError as error:
                    failures.append(str(error))

    threads = [threading.Thread(target=calls, args=(first,)) for first in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures[:3]
