"""The shipped digits data and the training example, run as the README runs it."""

import io
import subprocess
import sys

import numpy as np
import pytest
from conftest import EMULATED_METAL, child_env
from gradstate.examples import train_digits


def test_digits_data():
    images, labels = train_digits.load_digits()
    assert images.shape == (1797, 8, 8) and images.dtype == np.float32
    assert labels.shape == (1797,) and labels.dtype == np.int64
    assert images.min() == 0 and images.max() == 16
    np.testing.assert_array_equal(np.bincount(labels), [178, 182, 177, 183, 181, 182, 181, 179, 174, 180])
    # The first image is a 0, as in scikit-learn's load_digits().
    assert labels[0] == 0 and images[0, 0].tolist() == [0, 0, 5, 13, 9, 1, 0, 0]


def test_split_is_fixed_and_disjoint():
    images, labels = train_digits.load_digits()
    x_train, y_train, x_test, y_test = train_digits.split(images, labels, seed=0)
    assert x_train.shape == (1437, 8, 8, 1) and x_test.shape == (360, 8, 8, 1)
    assert x_train.max() <= 1.0
    again = train_digits.split(images, labels, seed=0)
    np.testing.assert_array_equal(again[1], y_train)
    np.testing.assert_array_equal(again[3], y_test)


def test_one_epoch_learns():
    out = io.StringIO()
    accuracy = train_digits.train(epochs=1, out=out)
    assert accuracy > 0.8, out.getvalue()
    lines = out.getvalue().splitlines()
    assert lines[1].startswith("epoch  1/1  loss ") and "test accuracy" in lines[1]


@pytest.mark.skipif(EMULATED_METAL, reason="twelve epochs take too long on the emulated Metal device")
def test_module_command_reaches_the_target():
    """python -m gradstate.examples.train_digits, the README's first command: >= 95% test accuracy."""
    proc = subprocess.run(
        [sys.executable, "-m", "gradstate.examples.train_digits"],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("test accuracy ") and float(last.split()[2].rstrip("%")) >= 95.0, proc.stdout
