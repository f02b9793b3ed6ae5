"""Kernel latency benchmark (docs/BENCHMARKS.md, "Notebook kernel"): for each kernelspec given,
measures over the real Jupyter protocol

  ready        start_new_kernel until kernel_info answers
  trivial      `1 + 1` (median of 5)
  first arwkv  the first cell using the arwkv crate (ours: preloaded; stock evcxr: after a `:dep` cell)
  later arwkv  the next arwkv cells (median of 3)
  restart      restart_kernel until a trivial cell has run again

Usage: python benches/kernel_latency.py KERNEL [KERNEL ...]
  A kernel whose name contains "evcxr" is stock evcxr_jupyter: it gets `:dep arwkv = { path = … }`
  first (the arwkv crate of this checkout) and the first-arwkv timing includes that cell.
Prints a markdown table.
"""

import pathlib
import statistics
import sys
import time

from jupyter_client.manager import start_new_kernel

ROOT = pathlib.Path(__file__).resolve().parent.parent
TIMEOUT = 3600


def run(kc, code):
    started = time.perf_counter()
    reply = kc.execute_interactive(code, timeout=TIMEOUT, output_hook=lambda msg: None)
    took = time.perf_counter() - started
    if reply["content"]["status"] != "ok":
        raise RuntimeError(f"{code!r} failed: {reply['content']}")
    return took


def measure(kernel):
    stock = "evcxr" in kernel
    started = time.perf_counter()
    km, kc = start_new_kernel(kernel_name=kernel, startup_timeout=TIMEOUT)
    ready = time.perf_counter() - started
    try:
        trivial = statistics.median(run(kc, "1 + 1") for _ in range(5))
        first = 0.0
        if stock:
            first += run(kc, f':dep arwkv = {{ path = "{ROOT / "arwkv"}" }}')
        first += run(kc, "arwkv::notebook::in_kernel()")
        later = statistics.median(
            run(kc, f"arwkv::distill::preset::preset_plan(\"tiny\").unwrap().context + {i}") for i in range(3)
        )
        started = time.perf_counter()
        km.restart_kernel(now=True)
        kc.wait_for_ready(timeout=TIMEOUT)
        if stock:
            run(kc, f':dep arwkv = {{ path = "{ROOT / "arwkv"}" }}')
        run(kc, "arwkv::notebook::in_kernel()")
        restart = time.perf_counter() - started
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    return ready, trivial, first, later, restart


def main():
    kernels = sys.argv[1:] or ["arwkv"]
    print("| kernel | ready (s) | trivial cell (s) | first arwkv cell (s) | later arwkv cell (s) | restart → arwkv cell (s) |")
    print("|---|---|---|---|---|---|")
    for kernel in kernels:
        row = measure(kernel)
        print(f"| {kernel} | " + " | ".join(f"{x:.2f}" for x in row) + " |", flush=True)


if __name__ == "__main__":
    main()
