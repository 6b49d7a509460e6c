"""The CPU backend's instruction-set levels: what cpu_info() reports, and the gradient tests passing at
every level this CPU can run.

Each CPU kernel is compiled once per level and the level is chosen once per process (GRADSTATE_CPU_ISA
when set, else the best one), so a level other than the chosen one can only be tested in a child process.
"""

import ast
import os
import subprocess
import sys

import gradstate as gs
import pytest
from conftest import call_in_child, child_env

# The CPU backend's levels are under test, whatever the default device.
pytestmark = pytest.mark.usefixtures("on_cpu")

KNOWN_LEVELS = ["scalar", "x86_v3", "x86_v4", "neon"]
USABLE = gs.cpu_info()["usable"]
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
# The tests of every kernel's results against the float64 reference (the optimizers' too).
GRADIENT_MODULES = [
    "test_convolution.py",
    "test_instance_norm.py",
    "test_kernel_paths.py",
    "test_optim.py",
    "test_random_shapes.py",
]


def test_cpu_info_is_consistent():
    info = gs.cpu_info()
    assert set(info) == {"detected", "chosen", "usable", "num_threads"}
    assert isinstance(info["usable"], list) and info["usable"]
    assert set(info["usable"]) <= set(KNOWN_LEVELS) and len(set(info["usable"])) == len(info["usable"])
    # Every CPU runs the scalar kernels.
    assert "scalar" in info["usable"]
    assert info["chosen"] in info["usable"]
    assert info["detected"] in KNOWN_LEVELS
    assert info["num_threads"] == gs.get_num_threads() >= 1
    forced = os.environ.get("GRADSTATE_CPU_ISA")
    if forced:
        assert info["chosen"] == forced


def test_default_level_is_the_detected_one():
    # Without GRADSTATE_CPU_ISA the best level the CPU supports is used, when this build contains it.
    line = call_in_child("gs.cpu_info()")
    assert line.startswith("returned "), line
    info = ast.literal_eval(line[len("returned ") :])
    assert info["usable"] == USABLE
    if info["detected"] in info["usable"]:
        assert info["chosen"] == info["detected"]
    else:
        assert info["chosen"] == info["usable"][-1]


@pytest.mark.parametrize("level", USABLE)
def test_gradients_at_every_level(level):
    assert call_in_child("gs.cpu_info()['chosen']", GRADSTATE_CPU_ISA=level) == f"returned {level!r}"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider"]
        + [os.path.join(TESTS_DIR, name) for name in GRADIENT_MODULES],
        cwd=os.path.dirname(TESTS_DIR),
        env=child_env(GRADSTATE_CPU_ISA=level, GRADSTATE_DEFAULT_DEVICE="cpu"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, (
        f"gradient tests at GRADSTATE_CPU_ISA={level} exited with {proc.returncode}:\n"
        f"{proc.stdout[-6000:]}\n{proc.stderr[-2000:]}"
    )


# An unknown name, a known name in the wrong case, and the levels this CPU (or this build) cannot run.
BAD_LEVELS = ["avx9", "X86_V4", *[level for level in KNOWN_LEVELS if level not in USABLE]]
FIRST_USES = {
    "cpu_info": "gs.cpu_info()",
    "kernel": "gs.Convolution(np.ones((1, 1, 1, 1), np.float32), device='cpu')"
    ".forward(np.ones((1, 2, 2, 1), np.float32))",
}


@pytest.mark.parametrize("first_use", sorted(FIRST_USES))
@pytest.mark.parametrize("level", BAD_LEVELS)
def test_bad_level_is_refused(level, first_use):
    # Importing works; the first call that needs the level raises, naming the levels that would work.
    line = call_in_child(FIRST_USES[first_use], GRADSTATE_CPU_ISA=level)
    assert line.startswith("ValueError: GRADSTATE_CPU_ISA: "), line
    assert repr(level) in line, line
    for usable in USABLE:
        assert usable in line, line
