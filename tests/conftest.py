"""Shared helpers for the gradstate tests.

The helpers are plain functions (imported with ``from conftest import ...``) as well as fixtures, so that
parametrized module-level code can use them too.
"""

import os
import sys

import numpy as np
import pytest

# The tests import ``reference`` and ``conftest`` by name; make that work whatever pytest import mode is
# configured.
_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

SEED = 20240531

# Below this the largest reference magnitude is treated as zero, so an all-zero reference demands an
# (almost) exactly zero result.
TINY = float(np.finfo(np.float32).tiny)


def make_rng(offset=0):
    return np.random.default_rng(SEED + offset)


@pytest.fixture
def rng(request):
    # One stream per test, stable under reordering and -k selection.
    return np.random.default_rng([SEED, *request.node.nodeid.encode()])


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def to_nchw(a):
    """(N, H, W, C) -> C-contiguous (N, C, H, W)."""
    return np.ascontiguousarray(np.asarray(a).transpose(0, 3, 1, 2))


def to_nhwc(a):
    """(N, C, H, W) -> C-contiguous (N, H, W, C)."""
    return np.ascontiguousarray(np.asarray(a).transpose(0, 2, 3, 1))


def from_layout(a, layout):
    return to_nhwc(a) if layout == "NCHW" else np.asarray(a)


def in_layout(a, layout):
    return to_nchw(a) if layout == "NCHW" else np.ascontiguousarray(a)


def assert_close(actual, ref, rtol=1e-4, what=""):
    """The project's accuracy rule: max|actual - ref| <= rtol * max(max|ref|, TINY).

    NaN and +-Inf in the reference must appear at the same places in ``actual``; the rule applies to the
    finite entries.
    """
    actual = np.asarray(actual)
    ref = np.asarray(ref, np.float64)
    label = f"{what}: " if what else ""
    assert actual.shape == ref.shape, f"{label}shape {actual.shape} != reference {ref.shape}"
    a = actual.astype(np.float64)
    nan_a, nan_r = np.isnan(a), np.isnan(ref)
    assert np.array_equal(nan_a, nan_r), (
        f"{label}NaN at {np.argwhere(nan_a != nan_r)[:5].tolist()} differs from the reference"
    )
    inf_r = np.isinf(ref)
    assert np.array_equal(np.isinf(a), inf_r) and np.array_equal(a[inf_r], ref[inf_r]), (
        f"{label}Inf placement differs from the reference"
    )
    finite = np.isfinite(ref)
    if not finite.any():
        return
    scale = max(float(np.abs(ref[finite]).max()), TINY)
    err = np.abs(a[finite] - ref[finite])
    worst = float(err.max())
    if worst > rtol * scale:
        idx = np.argwhere(finite)[int(err.argmax())]
        raise AssertionError(
            f"{label}max abs error {worst:.3g} > {rtol:g} * {scale:.3g} (relative {worst / scale:.3g}); "
            f"worst at {tuple(idx.tolist())}: actual {a[tuple(idx)]!r}, reference {ref[tuple(idx)]!r}"
        )


def f32(a):
    """float32 C-contiguous copy; tests feed the package float32 data and the reference the same values."""
    return np.ascontiguousarray(a, dtype=np.float32)
