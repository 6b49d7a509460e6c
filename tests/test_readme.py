"""The README's example runs as written and computes what it says."""

import importlib.util
import pathlib
import re

import numpy as np

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README.md has no python example"
    namespace = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)
    assert namespace["dW"].shape == (16, 3, 3, 3) and namespace["dW"].dtype == np.float32
    # With dy = 1, db is the number of output pixels over the batch.
    np.testing.assert_array_equal(namespace["db"], np.full(16, 8 * 32 * 32, np.float32))
    assert namespace["dx"].shape == namespace["x"].shape


def test_readme_training_loop_lowers_the_loss():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 2, "README.md has no training example"
    namespace = {}
    exec(compile(blocks[1], str(README), "exec"), namespace)
    losses = namespace["losses"]
    assert losses[-1] < 0.5 * losses[0], losses
    assert not np.array_equal(namespace["norm"].beta, np.zeros(8, np.float32))


def test_readme_commands_run_modules_that_exist():
    commands = re.findall(r"```sh\n(.*?)```", README.read_text(), flags=re.S)
    modules = [m for c in commands for m in re.findall(r"\.venv/bin/python -m ([\w.]+)", c)]
    assert modules[:2] == ["gradstate.examples.train_digits", "pytest"], modules
    assert importlib.util.find_spec(modules[0]) is not None
