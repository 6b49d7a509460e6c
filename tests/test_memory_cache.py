"""Host memory blocks (outputs' and the kernels' own) freed by one call are kept for the next, up to a cap.

A kept block holds whatever the last call left in it, so results must not depend on what was there: the
same call gives the same bits with fresh memory and with reused memory, and after the kept blocks are
released.
"""

import gradstate as gs
import pytest
from conftest import ConvCase, assert_same_bits, run_conv

pytestmark = pytest.mark.usefixtures("on_cpu")

MIB = 1 << 20
MAX_KEPT = 256 * MIB  # the cap in csrc/gradstate/core/host_memory.cpp

# Winograd's weight gradient keeps its 8 parts' dU (2 MiB here, over the 1 MiB that blocks are kept from) in
# kernel memory.
CASE_SHAPE = (2, 64, 64, 64, 64, 3, 1)


def test_freed_blocks_are_kept_and_released(rng):
    gs._core._release_cached_host_blocks()
    assert gs._core._cached_host_bytes() == 0
    fresh = run_conv(ConvCase(rng, *CASE_SHAPE), "NHWC")
    assert gs._core._cached_host_bytes() > 0
    gs._core._release_cached_host_blocks()
    assert gs._core._cached_host_bytes() == 0
    assert fresh[2].size > 0


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_reused_memory_gives_the_same_bits(rng, layout):
    case = ConvCase(rng, *CASE_SHAPE)
    gs._core._release_cached_host_blocks()
    fresh = run_conv(case, layout)
    # Other shapes leave other values in the kept blocks before the case runs again.
    for shape in [(1, 30, 30, 40, 24, 3, 1), (2, 17, 19, 24, 40, 5, 2)]:
        run_conv(ConvCase(rng, *shape), layout)
    reused = run_conv(case, layout)
    for name, a, b in zip(["y", "dx", "dW", "db"], reused, fresh):
        assert_same_bits(a, b, what=name)


def test_kept_memory_stays_under_the_cap(rng):
    for shape in [(8, 64, 64, 32, 64, 3, 1), (4, 48, 40, 64, 96, 3, 1), (2, 96, 96, 16, 128, 3, 1)]:
        run_conv(ConvCase(rng, *shape), "NHWC")
        assert 0 < gs._core._cached_host_bytes() <= MAX_KEPT
