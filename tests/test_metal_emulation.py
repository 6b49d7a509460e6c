"""The Metal backend, verified on a machine without Metal.

CMake builds tests/metal_emulation with AddressSanitizer and UndefinedBehaviorSanitizer: the real .metal
kernels rewritten into C++ and run by the emulator (each GPU thread a fiber), behind the mock Metal device
that the unchanged host code drives through the Objective-C runtime functions. The harness compares every
op with the CPU backend under the in-order and three shuffled schedules; planted launcher bugs and the
emulator's own planted kernel bugs must be caught. Needs cmake and a C++ compiler (the test extra installs
cmake and ninja); the build directory is kept under build/ so that later runs rebuild only what changed.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
KERNEL_DIR = ROOT / "csrc" / "gradstate" / "metal" / "kernels"
TEST = "gradstate_metal_emulation_test"
BUILD_DIR = Path(os.environ.get("GRADSTATE_EMULATION_BUILD_DIR", ROOT / "build" / "metal-emulation"))

# Sanitizer reports end the process with an error, and name the .metal line of a bad kernel access.
SANITIZER_ENV = {
    "ASAN_OPTIONS": "abort_on_error=0:halt_on_error=1:detect_leaks=0",
    "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1",
}


def tool(name):
    """`name` from this Python's environment (where the test extra installs cmake and ninja), else PATH."""
    return shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)


def metal_kernel_list():
    text = (ROOT / "cmake" / "GradstateMetal.cmake").read_text()
    return re.search(r"^set\(GRADSTATE_METAL_KERNELS (.*)\)$", text, re.M).group(1).split()


@pytest.fixture(scope="module")
def harness():
    cmake = tool("cmake")
    if cmake is None or shutil.which("c++") is None:
        pytest.skip("cmake or a C++ compiler is missing")
    configure = [cmake, "-S", str(ROOT), "-B", str(BUILD_DIR), "-DCMAKE_BUILD_TYPE=RelWithDebInfo"]
    configure += ["-DGRADSTATE_PYTHON_MODULE=OFF", "-DGRADSTATE_METAL_EMULATION=ON"]
    configure += ["-DGRADSTATE_SANITIZE=ON"]
    configure += [f"-DPython_EXECUTABLE={sys.executable}"]
    ninja = tool("ninja")
    if ninja and not (BUILD_DIR / "CMakeCache.txt").exists():
        configure += ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}"]
    subprocess.run(configure, check=True, capture_output=True, text=True)
    build = [cmake, "--build", str(BUILD_DIR), "--parallel", str(os.cpu_count() or 2)]
    build += ["--target", TEST, "gradstate_emulator_selftest"]
    result = subprocess.run(build, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    return BUILD_DIR / "csrc"


def run(executable, *args, env=None):
    return subprocess.run(
        [str(executable), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **SANITIZER_ENV, **(env or {})},
        timeout=1800,
    )


def test_kernel_list_is_the_same_everywhere():
    # One list (cmake/GradstateMetal.cmake) feeds the metallib, the embedded sources and the harness; the
    # macOS workflow reads it too. It must name exactly the .metal files there are.
    listed = metal_kernel_list()
    assert sorted(listed) == sorted(p.stem for p in KERNEL_DIR.glob("*.metal"))
    workflow = (ROOT / ".github" / "workflows" / "macos.yml").read_text()
    assert "GRADSTATE_METAL_KERNELS" in workflow and "GRADSTATE_METAL_WERROR=ON" in workflow


def test_metal_backend_matches_the_cpu_backend(harness):
    result = run(harness / TEST)
    print(result.stdout)
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-8000:]
    assert re.search(r"^\d+ checks, 0 failed$", result.stdout, re.M)
    # Every kernel of every .metal file ran (the harness checks each one's schedules and grid shapes).
    table = result.stdout
    for source in metal_kernel_list():
        names = re.findall(
            r"^[^/\n]*\bkernel\s+void\s+(\w+)\s*\(", (KERNEL_DIR / f"{source}.metal").read_text(), re.M
        )
        assert names, source
        for name in names:
            assert re.search(rf"^{name}\s", table, re.M), f"{name} missing from the harness's table"


FAULTS = ["drop_first_set_bytes", "shorten_first_set_bytes", "swap_first_buffer_indices"]


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("op", ["convolution", "instance_norm"])
def test_planted_launcher_bug_is_noticed(harness, fault, op):
    result = run(harness / TEST, "--fault", fault, "--op", op)
    assert "UNNOTICED" not in result.stdout
    assert result.returncode != 0
    assert "noticed:" in result.stdout or "AddressSanitizer" in result.stderr, result.stdout + result.stderr


def test_kernels_load_from_a_metallib_named_by_the_environment(harness, tmp_path):
    metallib = tmp_path / "gradstate.metallib"
    metallib.write_bytes(b"mock")
    result = run(harness / TEST, "--quick", env={"GRADSTATE_METALLIB": str(metallib)})
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_missing_metallib_is_named(harness, tmp_path):
    missing = tmp_path / "nowhere.metallib"
    result = run(harness / TEST, "--quick", env={"GRADSTATE_METALLIB": str(missing)})
    assert result.returncode != 0
    assert f"GRADSTATE_METALLIB: expected an existing file, got {missing}" in result.stdout


def test_emulator_catches_its_planted_kernel_bugs(harness):
    result = run(harness / "gradstate_emulator_selftest")
    print(result.stdout)
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-8000:]


def test_out_of_bounds_kernel_read_is_reported_at_its_metal_line(harness):
    result = run(harness / "gradstate_emulator_selftest", "--out-of-bounds")
    assert result.returncode != 0
    assert "AddressSanitizer" in result.stderr
    assert re.search(r"\.metal:\d+", result.stderr), result.stderr[-4000:]
