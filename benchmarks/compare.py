"""Time gradstate and PyTorch side by side: same process, same data, same thread count.

For every case of the layer list, each contender (gradstate in both activation layouts, PyTorch in both
memory formats) is timed in interleaved rounds, its result is checked against a reference, and the time is
turned into GFLOP/s (convolution) or GB/s (instance norm), a fraction of the machine's peak and a speedup
over PyTorch's faster memory format. See README.md beside this file for how to read the output.
"""

import argparse
import fnmatch
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

# Imported in load_libraries(): gradstate reads its thread count from the environment when it loads.
gs: Any = None
torch: Any = None

LAYOUTS = ("NHWC", "NCHW")
TORCH_FORMATS = ("contiguous", "channels_last")
EPSILON = 1e-5
# float32 sums over up to ~10^5 terms, measured against the largest reference magnitude.
TOLERANCE = 1e-3

# The layer list of the performance targets: name, N, Cin, H, W, Cout, K, stride, pad, dilation, groups.
CONV_TABLE = """
stem7x7_s2   8 3 224 224 64 7 2 3 1 1
r3x3_64      8 64 56 56 64 3 1 1 1 1
r1x1_256to64 8 256 56 56 64 1 1 0 1 1
r3x3_128_s2  8 128 56 56 128 3 2 1 1 1
r3x3_256     8 256 14 14 256 3 1 1 1 1
r3x3_512     8 512 7 7 512 3 1 1 1 1
dil3x3_d2    4 64 64 64 64 3 1 2 2 1
style3x3_128 4 128 64 64 128 3 1 1 1 1
dw3x3_128    8 128 56 56 128 3 1 1 1 128
dw3x3_256_s2 8 256 28 28 256 3 2 1 1 256
grp3x3_g32   8 128 28 28 128 3 1 1 1 32
"""
# Instance-norm shapes (N, C, H, W).
NORM_TABLE = [(8, 64, 128, 128), (4, 128, 64, 64), (16, 256, 32, 32), (2, 32, 256, 256)]


# ---------------------------------------------------------------------------------------------- cases
@dataclass(frozen=True)
class ConvCase:
    name: str
    n: int
    cin: int
    h: int
    w: int
    cout: int
    k: int
    stride: int
    pad: int
    dilation: int
    groups: int

    def out_size(self, size):
        return (size + 2 * self.pad - self.dilation * (self.k - 1) - 1) // self.stride + 1

    @property
    def kind(self):
        return "dense conv" if self.groups == 1 else "depthwise+grouped conv"

    @property
    def work(self):
        # Forward, dx and dW each take this many multiply-adds x 2; the bias gradient is not counted.
        oh, ow = self.out_size(self.h), self.out_size(self.w)
        return 2 * self.n * oh * ow * self.cout * self.k * self.k * (self.cin // self.groups)

    def describe(self):
        return (
            f"N={self.n} Cin={self.cin} {self.h}x{self.w} -> Cout={self.cout} "
            f"{self.out_size(self.h)}x{self.out_size(self.w)}, K={self.k} stride={self.stride} "
            f"pad={self.pad} dilation={self.dilation} groups={self.groups}"
        )


@dataclass(frozen=True)
class NormCase:
    n: int
    c: int
    h: int
    w: int
    kind = "instance norm"

    @property
    def name(self):
        return f"in_{self.n}x{self.c}x{self.h}x{self.w}"

    @property
    def work(self):  # elements; the op's bytes per element turn it into bytes moved
        return self.n * self.c * self.h * self.w

    def describe(self):
        return f"N={self.n} C={self.c} {self.h}x{self.w}"


CONV_CASES = [ConvCase(r[0], *map(int, r[1:])) for r in map(str.split, CONV_TABLE.strip().splitlines())]
NORM_CASES = [NormCase(*shape) for shape in NORM_TABLE]


def aligned(a):
    """A copy of `a` at a 64-byte boundary, where PyTorch's allocator puts its tensors and gradstate its
    buffers (numpy's own arrays usually start 16 bytes past one, and vector loads that straddle cache lines
    cost depthwise layers up to 20%): both libraries then read their inputs as they would in a network."""
    raw = np.empty(a.nbytes + 64, np.uint8)
    start = -raw.ctypes.data % 64
    out = raw[start : start + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


def conv_data(case, rng):
    """NCHW activations and OIHW weights, float32; the contenders convert them to their own layouts."""
    oh, ow = case.out_size(case.h), case.out_size(case.w)
    fan_in = case.cin // case.groups * case.k * case.k
    w = rng.standard_normal((case.cout, case.cin // case.groups, case.k, case.k), dtype=np.float32)
    return {
        "x": aligned(rng.standard_normal((case.n, case.cin, case.h, case.w), dtype=np.float32)),
        "w": w / np.float32(math.sqrt(fan_in)),
        "b": rng.standard_normal(case.cout, dtype=np.float32),
        "dy": aligned(rng.standard_normal((case.n, case.cout, oh, ow), dtype=np.float32)),
    }


def norm_data(case, rng):
    shape = (case.n, case.c, case.h, case.w)
    return {
        # An offset and a scale to normalise.
        "x": aligned(3 + 2 * rng.standard_normal(shape, dtype=np.float32)),
        "gamma": rng.uniform(0.5, 1.5, case.c).astype(np.float32),
        "beta": rng.standard_normal(case.c, dtype=np.float32),
        "dy": aligned(rng.standard_normal(shape, dtype=np.float32)),
    }


# -------------------------------------------------------------------------------------------- gradstate
def to_layout(a, layout):
    return aligned(a.transpose(0, 2, 3, 1)) if layout == "NHWC" else a


def from_layout(a, layout):
    return np.asarray(a).transpose(0, 3, 1, 2) if layout == "NHWC" else np.asarray(a)


def gs_conv_inputs(case, data, layout, device):
    weights_ohwi = np.ascontiguousarray(data["w"].transpose(0, 2, 3, 1))
    conv = gs.Convolution(
        weights_ohwi,
        data["b"],
        stride=case.stride,
        dilation=case.dilation,
        groups=case.groups,
        padding=case.pad,
        device=device,
    )
    return conv, to_layout(data["x"], layout), to_layout(data["dy"], layout)


def gs_norm_inputs(case, data, layout, device):
    norm = gs.InstanceNormalization(case.c, data["gamma"], data["beta"], EPSILON, device=device)
    return norm, to_layout(data["x"], layout), to_layout(data["dy"], layout)


# Each returns (run, result): run() is what is timed; result(last output of run) gives the outputs in NCHW
# and OIHW for the check, read after timing because the gradient states are overwritten by every run. The
# gradients take the state of one forward pass, made beforehand.
def gs_conv_forward(conv, x, dy, layout):
    return lambda: conv.forward(x, layout)[0], lambda y: [from_layout(y, layout)]


def gs_conv_data(conv, x, dy, layout):
    _, state = conv.forward(x, layout)
    grad = gs.ConvolutionGradient(conv, option=gs.GradientOption.DATA)
    return lambda: grad.backward(dy, x, state), lambda dx: [from_layout(dx, layout)]


def gs_conv_weights(conv, x, dy, layout):
    _, state = conv.forward(x, layout)
    grad = gs.ConvolutionGradient(conv, option=gs.GradientOption.WEIGHTS_AND_BIAS)
    return lambda: grad.backward(dy, x, state), lambda _: [
        np.asarray(state.gradient_for_weights).transpose(0, 3, 1, 2),
        np.asarray(state.gradient_for_biases),
    ]


def gs_norm_forward(norm, x, dy, layout):
    return lambda: norm.forward(x, layout)[0], lambda y: [from_layout(y, layout)]


def gs_norm_backward(norm, x, dy, layout):
    _, state = norm.forward(x, layout)
    grad = gs.InstanceNormalizationGradient(norm)
    return lambda: grad.backward(dy, x, state), lambda dx: [
        from_layout(dx, layout),
        np.asarray(state.gradient_for_gamma),
        np.asarray(state.gradient_for_beta),
    ]


# ---------------------------------------------------------------------------------------------- PyTorch
def tensor(a, fmt, device):
    memory_format = torch.channels_last if fmt == "channels_last" else torch.contiguous_format
    return torch.from_numpy(a).to(device).contiguous(memory_format=memory_format)


def to_numpy(t):
    return t.detach().cpu().contiguous().numpy()


def torch_conv_inputs(case, data, fmt, device):
    x, w, dy = (tensor(data[k], fmt, device) for k in ("x", "w", "dy"))
    return x, w, torch.from_numpy(data["b"]).to(device), dy


def torch_norm_inputs(case, data, fmt, device):
    """The (1, N*C, H, W) view that batch norm treats as instance norm, with its saved mean and 1/std."""
    if fmt == "channels_last" and case.n > 1:
        return None  # channels-last (N, C, H, W) data has no (1, N*C, H, W) view without a copy
    shape = (1, case.n * case.c, case.h, case.w)
    x, dy = (tensor(data[k], fmt, device).reshape(shape) for k in ("x", "dy"))
    gamma, beta = (torch.from_numpy(data[k]).to(device).repeat(case.n) for k in ("gamma", "beta"))
    _, mean, invstd = torch.ops.aten.native_batch_norm(x, gamma, beta, None, None, True, 0.0, EPSILON)
    return x, dy, gamma, beta, mean, invstd


def torch_conv_forward(case, x, w, b, dy):
    def run():
        return torch.nn.functional.conv2d(x, w, b, case.stride, case.pad, case.dilation, case.groups)

    return run, lambda y: [to_numpy(y)]


def conv_backward(case, x, w, dy, mask):
    s, p, d = [case.stride] * 2, [case.pad] * 2, [case.dilation] * 2
    return torch.ops.aten.convolution_backward(
        dy, x, w, [case.cout], s, p, d, False, [0, 0], case.groups, mask
    )


def torch_conv_data(case, x, w, b, dy):
    return lambda: conv_backward(case, x, w, dy, [True, False, False]), lambda out: [to_numpy(out[0])]


def torch_conv_weights(case, x, w, b, dy):
    return lambda: conv_backward(case, x, w, dy, [False, True, True]), lambda out: [
        to_numpy(out[1]),
        to_numpy(out[2]),
    ]


def torch_norm_forward(case, x, dy, gamma, beta, mean, invstd):
    def run():
        return torch.ops.aten.native_batch_norm(x, gamma, beta, None, None, True, 0.0, EPSILON)

    return run, lambda out: [to_numpy(out[0]).reshape(case.n, case.c, case.h, case.w)]


def torch_norm_backward(case, x, dy, gamma, beta, mean, invstd):
    def run():
        dx, dgamma, dbeta = torch.ops.aten.native_batch_norm_backward(
            dy, x, gamma, None, None, mean, invstd, True, EPSILON, [True, True, True]
        )
        # Per-channel gradients as gradstate gives them: summed over the N images of the view.
        return dx, dgamma.view(case.n, case.c).sum(0), dbeta.view(case.n, case.c).sum(0)

    return run, lambda out: [
        to_numpy(out[0]).reshape(case.n, case.c, case.h, case.w),
        *map(to_numpy, out[1:]),
    ]


# ------------------------------------------------------------------------------------------------- ops
@dataclass(frozen=True)
class Family:
    cases: list
    data: Callable
    gs_inputs: Callable
    torch_inputs: Callable
    unit: str  # "GFLOP/s" or "GB/s"


CONV = Family(CONV_CASES, conv_data, gs_conv_inputs, torch_conv_inputs, "GFLOP/s")
NORM = Family(NORM_CASES, norm_data, gs_norm_inputs, torch_norm_inputs, "GB/s")


@dataclass(frozen=True)
class Op:
    family: Family
    gradstate: Callable
    torch: Callable
    bytes_per_element: int = 0  # instance norm: the least traffic, each element read or written once
    note: str = ""


OPS = {
    "conv_forward": Op(CONV, gs_conv_forward, torch_conv_forward),
    "conv_data": Op(CONV, gs_conv_data, torch_conv_data),
    "conv_weights": Op(CONV, gs_conv_weights, torch_conv_weights, note="GFLOP/s count the dW FLOPs only"),
    "norm_forward": Op(NORM, gs_norm_forward, torch_norm_forward, 8, "8 bytes/element: read x, write y"),
    "norm_backward": Op(
        NORM, gs_norm_backward, torch_norm_backward, 12, "12 bytes/element: read x, read dy, write dx"
    ),
}
DEFAULT_OPS = "conv_weights,norm_backward"


# ---------------------------------------------------------------------------------------------- timing
@dataclass
class Contender:
    library: str
    layout: str
    run: Callable
    result: Callable
    threads: int | None = None  # gradstate's threads while this one runs (only 1 is used), if not the run's
    samples: list = field(default_factory=list)
    output: Any = None

    @property
    def label(self):
        return f"{self.library} {self.layout}" + (f" {self.threads} thread" if self.threads else "")

    @property
    def median(self):
        return statistics.median(self.samples)


# The thread scaling of gradstate: the ops (--scaling) whose dense layers are also timed on one thread, in
# this layout, interleaved with the other contenders.
SCALING_LAYOUT = "NHWC"


def times_scaling(op_name, case, args):
    return op_name in args.scaling and case.kind == "dense conv" and args.threads > 1 and args.device == "cpu"


def contenders_for(op_name, op, case, data, args):
    found = []
    for layout in LAYOUTS:
        run, result = op.gradstate(*op.family.gs_inputs(case, data, layout, args.device), layout)
        found.append(Contender("gradstate", layout, run, result))
    if times_scaling(op_name, case, args):
        run, result = op.gradstate(
            *op.family.gs_inputs(case, data, SCALING_LAYOUT, args.device), SCALING_LAYOUT
        )
        found.append(Contender("gradstate", SCALING_LAYOUT, run, result, threads=1))
    for fmt in TORCH_FORMATS if torch is not None else ():
        inputs = op.family.torch_inputs(case, data, fmt, args.torch_device)
        if inputs is not None:
            run, result = op.torch(case, *inputs)
            found.append(Contender("torch", fmt, synchronized(run, args.torch_device), result))
    return found


def synchronized(run, device):
    """Torch on the GPU returns before the work is done; wait for it so that the time covers it."""
    if device != "mps":
        return run

    def run_and_wait():
        out = run()
        torch.mps.synchronize()
        return out

    return run_and_wait


def time_interleaved(contenders, timing, threads):
    """Rounds in which every contender runs in turn, so that load on the machine hits them all alike."""
    current = threads

    def take_threads(c):
        """gradstate's thread count for c's runs; after a change (the pool starts anew), one untimed run."""
        nonlocal current
        if (c.threads or threads) != current:
            current = c.threads or threads
            gs.set_num_threads(current)
            c.output = c.run()

    for c in contenders:
        take_threads(c)
        for _ in range(timing["warmup"]):
            c.output = c.run()
    rounds = timing["rounds"]
    time_per_round, runs_per_round = timing["min_time"] / rounds, math.ceil(timing["min_runs"] / rounds)
    for r in range(rounds):
        # Alternate the order so that no contender always runs right after the same other one.
        for c in contenders if r % 2 == 0 else contenders[::-1]:
            take_threads(c)
            spent, runs = 0.0, 0
            while spent < time_per_round or runs < runs_per_round:
                start = time.perf_counter()
                c.output = c.run()
                elapsed = time.perf_counter() - start
                c.samples.append(elapsed)
                spent, runs = spent + elapsed, runs + 1
    if current != threads:
        gs.set_num_threads(threads)


def relative_error(outputs, reference):
    def one(a, b):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30))

    return max(one(a, b) for a, b in zip(outputs, reference))


# ----------------------------------------------------------------------------------------- machine peak
def measure_peak(source, has_avx512, repeats=5):
    """({threads: (FMA GFLOP/s, read GB/s)}, note) from the peak program, which prints figures for 1 and 2
    threads.

    It runs several times and keeps the best figure of each, as other load on the machine only lowers them.
    On a CPU without AVX-512 the program would stop at its first AVX-512 instruction (and -mavx512f lets the
    compiler use them anywhere), so a copy of it without its AVX-512 loop is built without that flag, and only
    its AVX2 figures are read.
    """
    if source is None or not Path(source).is_file():
        return {}, f"peak program not found ({source}); give --peak-gflops/--peak-gbps"
    text = Path(source).read_text()
    fma_pattern = r"fma\s+threads=(\d+):\s*([\d.]+) GFLOP/s"  # the AVX-512 or AVX2 loop, the faster
    flags = ["-O3", "-ffast-math", "-mavx512f", "-mavx2", "-mfma", "-fopenmp"]
    if not has_avx512:
        text = re.sub(r"static float fma_loop512\(.*?\n}\n", "", text, flags=re.S)  # its definition
        text = re.sub(r"\bfma_loop512\(\s*\w+\s*\)", "0", text)  # and its calls
        fma_pattern = "avx2 " + fma_pattern
        flags.remove("-mavx512f")
    with tempfile.TemporaryDirectory() as tmp:
        exe, copy = Path(tmp) / "peak", Path(tmp) / "peak.c"
        copy.write_text(text)
        try:
            subprocess.run(["gcc", *flags, str(copy), "-o", str(exe)], check=True, capture_output=True)
            out = "".join(
                subprocess.run([str(exe)], check=True, capture_output=True, text=True, timeout=120).stdout
                for _ in range(repeats)
            )
        except (OSError, subprocess.SubprocessError) as e:
            return {}, f"peak program failed to build or run: {e}"

    def best(pattern):
        found = {}
        for t, v in re.findall(pattern, out):
            found[int(t)] = max(found.get(int(t), 0.0), float(v))
        return found

    gflops, gbps = best(fma_pattern), best(r"read bandwidth threads=(\d+):\s*([\d.]+) GB/s")
    loops = "" if has_avx512 else ", its AVX2 loop only (this CPU has no AVX-512)"
    figures = {t: (gflops[t], gbps[t]) for t in gflops if t in gbps}
    return figures, f"best of {repeats} runs of the peak program{loops}"


# ------------------------------------------------------------------------------------------- reporting
def work(op, case):
    """FLOPs of a convolution, bytes moved by an instance norm."""
    return case.work * (op.bytes_per_element or 1)


def speedups(contenders):
    """torch's best median over gradstate's best median, and over each gradstate layout (at the run's
    thread count)."""
    torch_times = [c.median for c in contenders if c.library == "torch"]
    if not torch_times:
        return {}
    best_torch = min(torch_times)
    by_layout = {
        c.layout: best_torch / c.median for c in contenders if c.library == "gradstate" and not c.threads
    }
    return {"best": max(by_layout.values()), **by_layout}


def scaling(contenders):
    """gradstate's median on one thread over its median on the run's threads, in SCALING_LAYOUT; None
    without a one-thread contender."""
    one = next((c for c in contenders if c.threads == 1), None)
    if one is None:
        return None
    many = next(
        c for c in contenders if c.library == "gradstate" and c.layout == one.layout and not c.threads
    )
    return one.median / many.median


def record(c, amount, peak, error):
    rate = amount / c.median / 1e9
    return {
        "library": c.library,
        "layout": c.layout,
        "threads": c.threads,
        "label": c.label,
        "samples_s": c.samples,
        "median_s": c.median,
        "min_s": min(c.samples),
        "rate": rate,
        "fraction_of_peak": rate / peak if peak else None,
        "relative_error": error,
    }


def print_record(rec, unit):
    fraction = "  n/a" if rec["fraction_of_peak"] is None else f"{100 * rec['fraction_of_peak']:5.1f}"
    flag = "" if rec["relative_error"] <= TOLERANCE else "  ! differs from the reference"
    print(
        f"  {rec['label']:<23} {rec['median_s'] * 1e3:9.2f} ms"
        f" (min {rec['min_s'] * 1e3:9.2f}, {len(rec['samples_s']):3d} runs)"
        f" {rec['rate']:8.1f} {unit:<7} {fraction} % peak   err {rec['relative_error']:.0e}{flag}"
    )


def run_case(op_name, op, case, args, peak):
    data = op.family.data(case, np.random.default_rng(20240531))
    contenders = contenders_for(op_name, op, case, data, args)
    time_interleaved(contenders, args.timing, args.threads)
    outputs = [c.result(c.output) for c in contenders]
    # PyTorch's contiguous result is the reference when there is one; its channels-last instance-norm dx is
    # known to be wrong in some versions.
    libraries = [c.library for c in contenders]
    reference = outputs[libraries.index("torch") if "torch" in libraries else 0]
    unit = op.family.unit

    def peak_of(c):
        figures = peak["one_thread"] if c.threads == 1 else peak
        return figures["gflops"] if unit == "GFLOP/s" else figures["gbps"]

    records = [
        record(c, work(op, case), peak_of(c), relative_error(out, reference))
        for c, out in zip(contenders, outputs)
    ]
    ratio, scale = speedups(contenders), scaling(contenders)

    print(f"\n{op_name} {case.name}: {case.describe()}")
    for rec in records:
        print_record(rec, unit)
    if ratio:
        print("  speedup (torch best / gradstate): " + "  ".join(f"{k} {v:.2f}x" for k, v in ratio.items()))
    if scale is not None:
        print(
            f"  thread scaling (gradstate {SCALING_LAYOUT}, 1 thread / {args.threads} threads): {scale:.2f}x"
        )
    return {
        "op": op_name,
        "case": case.name,
        "kind": case.kind,
        "params": asdict(case),
        "work": work(op, case),
        "work_unit": "FLOP" if unit == "GFLOP/s" else "bytes",
        "rate_unit": unit,
        "contenders": records,
        "speedup": ratio,
        "scaling": scale,
    }


def geomean(values):
    return math.exp(sum(map(math.log, values)) / len(values))


def summarize(results):
    groups = {}
    for r in results:
        if r["speedup"]:
            groups.setdefault((r["op"], r["kind"]), []).append(r["speedup"])
    summary = []
    print(
        "\nGeomean speedup over PyTorch's faster format (worst case in brackets):"
        if groups
        else "\nno PyTorch: no speedups"
    )
    for (op_name, kind), ratios in groups.items():
        row = {"op": op_name, "kind": kind, "cases": len(ratios)}
        for key in ("best", *LAYOUTS):
            row[key] = geomean([s[key] for s in ratios])
            row[f"worst_{key}"] = min(s[key] for s in ratios)
        parts = "  ".join(f"{k} {row[k]:.2f}x [{row['worst_' + k]:.2f}x]" for k in ("best", *LAYOUTS))
        print(f"  {op_name:<14} {kind:<24} {len(ratios):2d} cases  {parts}")
        summary.append(row)
    return summary


def summarize_scaling(results, threads):
    """Geomean and worst case of the thread scaling per op and group, where it was timed."""
    groups = {}
    for r in results:
        if r["scaling"] is not None:
            groups.setdefault((r["op"], r["kind"]), []).append(r["scaling"])
    if groups:
        what = f"gradstate {SCALING_LAYOUT}, 1 thread / {threads} threads"
        print(f"\nThread scaling of {what} (worst case in brackets):")
    summary = []
    for (op_name, kind), values in groups.items():
        row = {
            "op": op_name,
            "kind": kind,
            "cases": len(values),
            "geomean": geomean(values),
            "worst": min(values),
        }
        print(
            f"  {op_name:<14} {kind:<24} {len(values):2d} cases  {row['geomean']:.2f}x [{row['worst']:.2f}x]"
        )
        summary.append(row)
    return summary


def plot(results, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"matplotlib is not installed: no chart written to {path}")
        return
    rows = [r for r in results if r["speedup"]]
    if not rows:
        print(f"no speedups without PyTorch: no chart written to {path}")
        return
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(rows) * len(LAYOUTS) + 1.5))
    y = np.arange(len(rows))
    height = 0.8 / len(LAYOUTS)
    for i, layout in enumerate(LAYOUTS):
        ax.barh(y + i * height, [r["speedup"][layout] for r in rows], height, label=f"gradstate {layout}")
    ax.set_yticks(y + height * (len(LAYOUTS) - 1) / 2, [f"{r['op']} {r['case']}" for r in rows])
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xlabel("speedup over PyTorch's faster memory format (torch time / gradstate time)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"chart written to {path}")


# ------------------------------------------------------------------------------------------------ main
def parse_args(argv):
    default_peak = Path(__file__).resolve().parents[2] / "shared/tools/peak.c"
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for both libraries")
    p.add_argument("--ops", default=DEFAULT_OPS, help=f"comma-separated, from: {', '.join(OPS)}; or 'all'")
    p.add_argument("--cases", help="comma-separated case names or glob patterns (default: all)")
    p.add_argument("--quick", action="store_true", help="fewer repeats: a check that it runs, not a measure")
    p.add_argument("--device", choices=["cpu", "metal"], default="cpu", help="gradstate's device")
    p.add_argument("--no-torch", action="store_true", help="time gradstate alone")
    p.add_argument("--peak-source", type=Path, default=default_peak, help="C source of the peak program")
    p.add_argument("--peak-gflops", type=float, help="FMA peak in GFLOP/s (skips the peak program)")
    p.add_argument("--peak-gbps", type=float, help="read bandwidth in GB/s (skips the peak program)")
    p.add_argument(
        "--scaling",
        default="conv_weights",
        help="comma-separated ops whose dense layers gradstate also runs on one thread, to report its thread "
        "scaling (default conv_weights; 'none' for none)",
    )
    p.add_argument("--json", type=Path, help="write every raw number here")
    p.add_argument("--png", type=Path, help="write a bar chart of the speedups here (needs matplotlib)")
    args = p.parse_args(argv)
    args.ops = list(OPS) if args.ops == "all" else [o.strip() for o in args.ops.split(",") if o.strip()]
    unknown = [o for o in args.ops if o not in OPS]
    if unknown:
        p.error(f"--ops: unknown {unknown}; expected some of {list(OPS)}")
    args.scaling = [] if args.scaling == "none" else [o.strip() for o in args.scaling.split(",") if o.strip()]
    unknown = [o for o in args.scaling if o not in OPS]
    if unknown:
        p.error(f"--scaling: unknown {unknown}; expected some of {list(OPS)} or 'none'")
    args.patterns = [c.strip() for c in args.cases.split(",")] if args.cases else ["*"]
    args.timing = (
        {"warmup": 1, "rounds": 1, "min_time": 0.0, "min_runs": 2}
        if args.quick
        else {"warmup": 2, "rounds": 10, "min_time": 0.6, "min_runs": 10}
    )
    return args


def load_libraries(args):
    global gs, torch
    os.environ["GRADSTATE_NUM_THREADS"] = str(args.threads)
    import gradstate

    gs = gradstate
    gs.set_num_threads(args.threads)
    device = next((d for d in gs.devices() if d.type == args.device), None)
    if device is None or not device.available:
        sys.exit(f"gradstate device {args.device!r} is unavailable: {device and device.unavailable_reason}")
    if not args.no_torch:
        try:
            import torch as torch_module
        except ImportError:
            print("PyTorch is not installed: timing gradstate alone")
        else:
            torch = torch_module
            torch.set_num_threads(args.threads)
    # The peer of gradstate on Metal is PyTorch on Apple's GPU, when this PyTorch build has it.
    use_mps = args.device == "metal" and torch is not None and torch.backends.mps.is_available()
    args.torch_device = "mps" if use_mps else "cpu"


def selected_cases(args):
    """(op name, case) pairs that --ops and --cases select, in the order they run."""
    return [
        (op_name, case)
        for op_name in args.ops
        for case in OPS[op_name].family.cases
        if any(fnmatch.fnmatch(case.name, pattern) for pattern in args.patterns)
    ]


def main(argv=None):
    args = parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # show each case as it ends, also when piped to a file
    todo = selected_cases(args)
    if not todo:
        sys.exit(f"no case matches --cases {args.cases!r} for --ops {','.join(args.ops)}")
    load_libraries(args)
    if args.peak_gflops or args.peak_gbps:
        peak = {
            "gflops": args.peak_gflops,
            "gbps": args.peak_gbps,
            "one_thread": {"gflops": None, "gbps": None},  # a one-thread contender's fraction prints n/a
            "note": "given on the command line",
        }
    else:
        has_avx512 = "x86_v4" in gs.cpu_info().get("usable", ()) if hasattr(gs, "cpu_info") else True
        figures, note = measure_peak(args.peak_source, has_avx512)
        if figures and args.threads not in figures:
            note = f"peak program prints no figures for {args.threads} threads"
        gflops, gbps = figures.get(args.threads, (None, None))
        one = figures.get(1, (None, None))
        peak = {
            "gflops": gflops,
            "gbps": gbps,
            "one_thread": {"gflops": one[0], "gbps": one[1]},
            "note": note,
        }
    config = {
        "threads": args.threads,
        "device": args.device,
        "torch_device": args.torch_device if torch is not None else None,
        "gradstate": gs.__version__,
        "torch": torch.__version__ if torch is not None else None,
        # The instruction set and thread count gradstate's CPU backend chose, in builds that report them.
        "gradstate_cpu": dict(gs.cpu_info()) if hasattr(gs, "cpu_info") else None,
        "numpy": np.__version__,
        "machine": f"{platform.machine()} {platform.system()} {platform.processor()}".strip(),
        "python": platform.python_version(),
        "timing": args.timing,
        "peak": peak,
    }
    peer = f"torch {torch.__version__} on {args.torch_device}" if torch is not None else "no torch"
    print(
        f"gradstate {gs.__version__} on {args.device}, {peer}, {args.threads} threads, numpy {np.__version__}"
    )
    if config["gradstate_cpu"]:
        print(f"gradstate CPU backend: {config['gradstate_cpu']}")
    print(f"peak: {peak['gflops'] or 'n/a'} GFLOP/s FMA, {peak['gbps'] or 'n/a'} GB/s read ({peak['note']})")
    if any(times_scaling(op_name, case, args) for op_name, case in todo):
        one = peak["one_thread"]
        print(f"one-thread peak (for the one-thread runs): {one['gflops'] or 'n/a'} GFLOP/s FMA")
    print("times are medians; speedup = torch's faster format / gradstate (best layout and each layout)")

    results = []
    for i, (op_name, case) in enumerate(todo):
        op = OPS[op_name]
        if op.note and (i == 0 or todo[i - 1][0] != op_name):
            print(f"\n[{op_name}: {op.note}]")
        results.append(run_case(op_name, op, case, args, peak))
    summary, scaling_summary = summarize(results), summarize_scaling(results, args.threads)
    if args.json:
        everything = {"config": config, "results": results, "summary": summary, "scaling": scaling_summary}
        args.json.write_text(json.dumps(everything, indent=1))
        print(f"raw numbers written to {args.json}")
    if args.png:
        plot(results, args.png)


if __name__ == "__main__":
    main()
