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
  plot update    a cell pushes a LossPlot's first point (what a training step does) and sleeps: from
                 the push (the cell's wall clock) to its display message arriving at the client
                 (median of 3; arwkv kernels only)

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


def rss_kib(pid):
    """Resident memory of one process in KiB (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return 0


def analyzer_service_mib():
    """RSS of the running arwkv-kernel analyzer services."""
    return sum(rss_kib(int(e)) for e in os.listdir("/proc")
               if e.isdigit() and is_analyzer_service(int(e))) / 1024


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
        total += rss_kib(p)
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


PLOT_CELL = """let mut latency_plot = LossPlot::new("latency");
let pushed_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
latency_plot.push("loss", 0.0, 1.0);
println!("pushed at {pushed_at}");
std::thread::sleep(std::time::Duration::from_millis(1500));
latency_plot.finish();"""


def plot_latency(kc):
    """Seconds from a LossPlot's first push to its display_data reaching this client."""
    msg_id = kc.execute(PLOT_CELL)
    pushed = shown = None
    while pushed is None or shown is None:
        msg = kc.get_iopub_msg(timeout=TIMEOUT)
        arrived = time.time()
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream" and "pushed at " in content["text"]:
            pushed = float(content["text"].split("pushed at ")[1].split()[0])
        elif kind == "display_data" and shown is None:
            shown = arrived
        elif kind == "error":
            raise RuntimeError(f"plot cell failed: {content}")
        elif kind == "status" and content["execution_state"] == "idle":
            raise RuntimeError("plot cell ended without a display")
    while True:
        msg = kc.get_iopub_msg(timeout=TIMEOUT)
        if (msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "status"
                and msg["content"]["execution_state"] == "idle"):
            break
    return shown - pushed


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
        plot = (statistics.median(plot_latency(kc) for _ in range(3))
                if "python" not in kernel and "evcxr" not in kernel else float("nan"))
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
    return ready, first, first_let, trivial, let, later, idle, service, restart, restart_let, plot


def main():
    kernels = sys.argv[1:] or ["arwkv"]
    print("| kernel | ready (s) | start → first library cell (s) | first `let` (s) | trivial cell (s) "
          "| `let` cell (s) | later library cell (s) | idle MiB | analyzer MiB | restart → library cell (s) "
          "| restart → first `let` (s) | first plot update (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for kernel in kernels:
        row = measure(kernel)
        cols = [f"{x:.2f}" for x in row]
        cols[6] = f"{row[6]:.0f}"
        cols[7] = f"{row[7]:.0f}"
        cols[10] = f"{row[10]:.3f}"
        print(f"| {kernel} | " + " | ".join(cols) + " |", flush=True)


if __name__ == "__main__":
    main()
