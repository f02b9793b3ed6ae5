"""Kernel latency benchmark (docs/BENCHMARKS.md, "Notebook kernel"): for each kernelspec given,
measures over the real Jupyter protocol, from a fresh kernel:

  ready          start_new_kernel until kernel_info answers
  first library  the first cell using the library, sent at once (ours: waits for the prelude;
                 stock evcxr: a `:dep arwkv` cell first; ipykernel: `import statistics`)
  first let      the first cell that defines a variable (ours: rust-analyzer's first type query)
  trivial        `1 + 1` (median of 5)
  let            `let v = i;` (median of 5)
  later library  library cells on the loaded library (median of 3)
  idle MiB       resident memory of the kernel and its children, idle after those cells (the
                 shared rust-analyzer service is not counted here but in its own column)
  analyzer MiB   resident memory of arwkv-kernel's shared analyzer service (one for all kernels)
  restart        restart_kernel until a library cell has run again
  restart → let  then the first cell that defines a variable (the restarted kernel's first type query)

Usage: python benches/kernel_latency.py KERNEL [KERNEL ...]
  A kernel whose name contains "evcxr" is stock evcxr_jupyter (it gets `:dep arwkv = { path = … }`
  for the arwkv crate of this checkout); "python" in the name means ipykernel. Prints a markdown table.
"""

import os
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


def is_analyzer_service(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"analyzer-service" in f.read()
    except OSError:
        return False


def analyzer_service_mib():
    """RSS of the running arwkv-kernel analyzer services."""
    total = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit() and is_analyzer_service(int(entry)):
            try:
                with open(f"/proc/{entry}/status") as f:
                    total += next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
            except (OSError, StopIteration):
                pass
    return total / 1024


def resident_mib(pid):
    """RSS of `pid` and all its descendants but the analyzer service, from /proc."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        if is_analyzer_service(p):
            continue
        todo.extend(children.get(p, []))
        try:
            with open(f"/proc/{p}/status") as f:
                total += next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
        except (OSError, StopIteration):
            pass
    return total / 1024


def cells_for(kernel):
    if "python" in kernel:
        return {"setup": None, "library": "import statistics\nstatistics.median([1, 2, 3])",
                "later": "statistics.median([1, 2, {i}])", "let": "v{i} = {i}", "first_let": "x = 1"}
    return {
        "setup": f':dep arwkv = {{ path = "{ROOT / "arwkv"}" }}' if "evcxr" in kernel else None,
        "library": "arwkv::notebook::in_kernel()",
        "later": 'arwkv::distill::preset::preset_plan("tiny").unwrap().context + {i}',
        "let": "let v{i} = {i};",
        "first_let": "let x = 1;",
    }


def measure(kernel):
    c = cells_for(kernel)
    started = time.perf_counter()
    km, kc = start_new_kernel(kernel_name=kernel, startup_timeout=TIMEOUT)
    ready = time.perf_counter() - started
    try:
        first = (run(kc, c["setup"]) if c["setup"] else 0.0) + run(kc, c["library"])
        first_let = run(kc, c["first_let"])
        trivial = statistics.median(run(kc, "1 + 1") for _ in range(5))
        let = statistics.median(run(kc, c["let"].format(i=i)) for i in range(5))
        later = statistics.median(run(kc, c["later"].format(i=i)) for i in range(3))
        time.sleep(2)
        idle = resident_mib(km.provisioner.process.pid)
        service = analyzer_service_mib()
        started = time.perf_counter()
        km.restart_kernel(now=True)
        kc.wait_for_ready(timeout=TIMEOUT)
        if c["setup"]:
            run(kc, c["setup"])
        run(kc, c["library"])
        restart = time.perf_counter() - started
        restart_let = run(kc, c["first_let"])
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    return ready, first, first_let, trivial, let, later, idle, service, restart, restart_let


def main():
    kernels = sys.argv[1:] or ["arwkv"]
    print("| kernel | ready (s) | start → first library cell (s) | first `let` (s) | trivial cell (s) "
          "| `let` cell (s) | later library cell (s) | idle MiB | analyzer MiB | restart → library cell (s) "
          "| restart → first `let` (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for kernel in kernels:
        row = measure(kernel)
        cols = [f"{x:.2f}" for x in row]
        cols[6] = f"{row[6]:.0f}"
        cols[7] = f"{row[7]:.0f}"
        print(f"| {kernel} | " + " | ".join(cols) + " |", flush=True)


if __name__ == "__main__":
    main()
