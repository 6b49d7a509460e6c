"""The README's example runs as written and computes what it says."""

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
