"""Extra memory of the convolution weight gradient, measured.

For each layer of compare.py's list and each layout, a fresh process builds the inputs and the gradient
state, then runs one weights-and-bias backward pass. The operating system's peak resident set size is reset
just before that pass (Linux: /proc/self/clear_refs), so its increase is the memory the pass itself added
beyond its inputs and the state: packing panels, partial sums, thread stacks. It is printed in MiB, in all
and per thread, next to the library's own count of the most scratch one thread has held.

    python benchmarks/memory.py --threads 2
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def status_kib(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} is not in /proc/self/status")


def child(name, layout):
    """Runs in a fresh process: prints the measurement of one case as JSON."""
    sys.path.insert(0, str(HERE))
    import compare
    import gradstate as gs

    compare.gs = gs
    case = next(c for c in compare.CONV_CASES if c.name == name)
    data = compare.conv_data(case, np.random.default_rng(0))
    conv, x, dy = compare.gs_conv_inputs(case, data, layout, None)
    _, state = conv.forward(x, layout)
    grad = gs.ConvolutionGradient(conv, option=gs.GradientOption.WEIGHTS_AND_BIAS)
    del data
    gs._core._release_cached_host_blocks()  # so that the pass's own blocks are counted, not reused ones
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
    before = status_kib("VmRSS")
    grad.backward(dy, x, state)
    extra = status_kib("VmHWM") - before
    print(json.dumps({"extra_kib": extra, "scratch_bytes": gs._core._peak_thread_scratch_bytes()}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--json", help="write the measurements here")
    parser.add_argument("--child", nargs=2, metavar=("CASE", "LAYOUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(*args.child)

    sys.path.insert(0, str(HERE))
    from compare import CONV_CASES

    env = dict(os.environ, GRADSTATE_NUM_THREADS=str(args.threads))
    rows = []
    print(f"extra memory of one dW+db pass, {args.threads} threads (MiB)")
    print(f"{'case':<14} {'layout':<6} {'total':>8} {'per thread':>11} {'largest scratch':>16}")
    for case in CONV_CASES:
        for layout in ("NHWC", "NCHW"):
            out = subprocess.run(
                [sys.executable, __file__, "--child", case.name, layout],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            m = json.loads(out.stdout.strip().splitlines()[-1])
            total, scratch = m["extra_kib"] / 1024, m["scratch_bytes"] / 2**20
            rows.append({"case": case.name, "layout": layout, "total_mib": total, "scratch_mib": scratch})
            print(f"{case.name:<14} {layout:<6} {total:8.2f} {total / args.threads:11.2f} {scratch:16.2f}")
    worst = max(rows, key=lambda r: r["total_mib"])
    print(
        f"largest: {worst['case']} {worst['layout']}: {worst['total_mib'] / args.threads:.2f} MiB per thread"
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"threads": args.threads, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
