"""The notebooks of notebooks/, run the three ways users run them (tests/kernel/run.sh runs this after
`arwkv-kernel install` has pre-built the prelude):

* headless, `arwkv-kernel run NB -p ...` (small step counts): every code cell runs, the saved
  notebook holds its outputs and final plots, and the last cell reports its final metrics;
* `jupyter execute` (nbclient) with the same small parameters injected (a subset in CI, see
  JUPYTER_EXECUTE; ARWKV_JUPYTER_EXECUTE=all runs every notebook);
* exported with `arwkv-kernel export`, built with `cargo build --release --locked --offline` and run:
  the program prints the same final metrics as the notebook, value for value;
* the runner's errors: a failing cell stops the run with its number, an unknown parameter is refused;
* `--format rs:percent` round-trips through jupytext to the same cells.

The runs go one at a time (ARWKV_NOTEBOOK_LANES, default 1): lavapipe and the CPU backend each use
every core, so two runs at once on 2 cores made each 1.7-2.4x slower and CI's notebook tests about
twice as long (docs/DECISIONS.md). The runs whose metrics an exported program must print value for
value (EXPORTED, on the CPU) go first, and those programs run after every other run has finished:
nothing else shares the cores while either side of that comparison computes.

Env: ARWKV_KERNEL_BIN (the arwkv-kernel binary), ARWKV_KERNEL_NAME (kernelspec, default arwkv),
ARWKV_EXPORT_TARGET (cargo target dir of the exported programs), ARWKV_NOTEBOOKS (comma-separated
subset to run), ARWKV_NOTEBOOK_LANES (runs at once, default 2).
"""

import concurrent.futures
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import nbformat

ROOT = pathlib.Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
DEVICE_CELLS = ROOT / "tests" / "kernel" / "device_cells.ipynb"
KERNEL_BIN = os.environ.get("ARWKV_KERNEL_BIN", str(ROOT / "target" / "debug" / "arwkv-kernel"))
KERNEL = os.environ.get("ARWKV_KERNEL_NAME", "arwkv")
TIMEOUT = int(os.environ.get("ARWKV_NOTEBOOK_TIMEOUT", "1800"))
PLOTLY = "application/vnd.plotly.v1+json"
METRICS = "final metrics "

# Small budgets so every notebook runs in CI in a bounded time; the defaults in the notebooks are
# what a person runs.
SMALL = {
    "00-quickstart": {},
    "01-rwkv7-time-mixing": {"t_len": "12"},
    "02-stage1-alignment": {"steps": "6"},
    "03-stage2-distillation": {"align_steps": "4", "kl_steps": "4", "ablation_steps": "2",
                               "table1_align_steps": "2", "table1_kl_steps": "2", "table1_seeds": "2",
                               "table1_heldout_tokens": "512"},
    "04-stage3-sft-dpo": {"align_steps": "3", "kl_steps": "3", "extend_steps": "2", "sft_steps": "3",
                          "dpo_steps": "2", "sft_rows": "16", "dpo_pairs": "8"},
    "05-evaluate-and-chat": {"align_steps": "3", "kl_steps": "3", "heldout_tokens": "1024",
                             "task_limit": "4", "contexts": "128,512"},
    "06-state-tracking": {"steps": "20", "train_rows": "200", "test_rows": "8", "train_len": "6",
                          "test_len": "12", "seeds": "1"},
}
EXPORTED = ["01-rwkv7-time-mixing", "02-stage1-alignment"]
# GPU backends: every notebook also runs on WGPU (Mesa lavapipe in CI; the same CubeCL + fusion path
# as CUDA and ROCm) when the kernel's prelude is built with `wgpu` (ARWKV_KERNEL_FEATURES). Its final
# metrics must agree with the CPU run's within ABS_TOL + REL_TOL * |cpu| (f32 on both; the GPU
# reduces in another order, and a few training steps amplify that).
GPU_DEVICES = [d for d in os.environ.get("ARWKV_NOTEBOOK_GPU_DEVICES",
                                         "wgpu" if "wgpu" in os.environ.get("ARWKV_KERNEL_FEATURES", "") else "").split(",") if d]
ABS_TOL, REL_TOL = 1e-3, 2e-2
# Exported and run on the GPU too (built with the prelude's features), compared with the notebook's
# GPU metrics within the same tolerance; and run through `jupyter execute` on the GPU.
GPU_EXPORTED = ["02-stage1-alignment"]
GPU_JUPYTER_EXECUTE = ["00-quickstart"]
# nbclient runs the same engine as the headless runner, so CI runs this subset through `jupyter
# execute` (ARWKV_JUPYTER_EXECUTE = "all" or a comma-separated list to change it): each run repeats
# the notebook's whole compute for no new engine path.
JUPYTER_EXECUTE = ["00-quickstart", "01-rwkv7-time-mixing", "06-state-tracking"]


def selected():
    only = os.environ.get("ARWKV_NOTEBOOKS")
    names = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))
    return [n for n in names if not only or n in only.split(",")]


def jupyter_execute_selected():
    wanted = os.environ.get("ARWKV_JUPYTER_EXECUTE")
    if wanted == "all":
        return selected()
    names = wanted.split(",") if wanted else JUPYTER_EXECUTE
    return [n for n in selected() if n in names]


def metrics_lines(text):
    return sorted(line.strip() for line in text.splitlines() if line.startswith(METRICS))


def notebook_text(nb):
    """All stream text of a saved notebook."""
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if o.output_type == "stream":
                out.append(o.text if isinstance(o.text, str) else "".join(o.text))
    return "".join(out)


def metrics_values(line):
    """`final metrics <label> {json}` → (label, {name: value})."""
    label, _, payload = line[len(METRICS):].partition(" ")
    return label, json.loads(payload)


# Metric labels whose values are argmax accuracies (notebook 06): after CI's 20 steps the two bits
# are near ties, so another backend's reduction order flips answers; across backends only the names
# and the range are compared. (To do: a continuous score, the right bit's probability, instead.)
ARGMAX_METRICS = {"state_tracking"}


def assert_metrics_close(test, got, want, what):
    """Final-metrics lines of two runs agree within ABS_TOL + REL_TOL * |want|, name by name."""
    test.assertEqual(len(got), 1, f"{what}: one final-metrics line expected, got {got}")
    (label, values), (want_label, want_values) = metrics_values(got[0]), metrics_values(want[0])
    test.assertEqual(label, want_label)
    test.assertEqual(sorted(values), sorted(want_values))
    if label in ARGMAX_METRICS and what.endswith(" vs cpu"):
        for key, value in values.items():
            test.assertTrue(0.0 <= value <= 1.0, f"{what}: {key} = {value}")
        return
    for key, expected in want_values.items():
        test.assertLessEqual(abs(values[key] - expected), ABS_TOL + REL_TOL * abs(expected),
                             f"{what}: {key} = {values[key]} vs {expected}")


# Lighter still on the GPU backend, for cells whose results are not in the final metrics the GPU run
# is compared on (the same code runs per seed / per context; lavapipe computes slowly): Table 1 from
# one seed, the decode sweep at one context.
GPU_LIGHTER = {"03-stage2-distillation": {"table1_seeds": "1"}, "05-evaluate-and-chat": {"contexts": "128"}}


def gpu_params(name, device):
    params = dict(SMALL[name], **GPU_LIGHTER.get(name, {}))
    params["device"] = device
    return params


def run_headless(name, cwd, params, out):
    args = [KERNEL_BIN, "run", str(NOTEBOOKS / f"{name}.ipynb"), "--out", str(out)]
    for k, v in params.items():
        args += ["-p", f"{k}={v}"]
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT)


def inject(nb, params):
    """What `arwkv-kernel run -p` does, for nbclient: a cell after the `parameters` cell."""
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    declared = {}
    for line in nb.cells[at].source.splitlines():
        line = line.strip()
        if line.startswith("let ") and "=" in line:
            head, init = line[4:].split("=", 1)
            name, _, ty = head.partition(":")
            declared[name.strip()] = (ty.strip(), init.strip())
    lines = []
    for k, v in params.items():
        ty, init = declared[k]
        value = json.dumps(v) if init.startswith('"') else v
        lines.append(f"let {k}{': ' + ty if ty else ''} = {value};")
    cell = nbformat.v4.new_code_cell("\n".join(lines), metadata={"tags": ["injected-parameters"]})
    nb.cells.insert(at + 1, cell)


class RunFailed(AssertionError):
    """A notebook run, build or program that exited with an error (its stderr's tail)."""


def check(done, what):
    if done.returncode != 0:
        raise RunFailed(f"{what} failed:\n{done.stderr[-6000:]}")
    return done


# Seconds each headless run took in CI (2 cores, 2026-12-04), only to start the longest first.
EXPECTED_S = {("03-stage2-distillation", "gpu"): 250, ("04-stage3-sft-dpo", "gpu"): 130,
              ("05-evaluate-and-chat", "gpu"): 80, ("03-stage2-distillation", "cpu"): 66,
              ("04-stage3-sft-dpo", "cpu"): 35, ("06-state-tracking", "gpu"): 30,
              ("00-quickstart", "gpu"): 25}
LANES = max(1, int(os.environ.get("ARWKV_NOTEBOOK_LANES", "1")))


class Runs:
    """Every run the notebook tests need, started on the first demand, LANES at a time; a test takes
    the result of the runs it checks (a failed run raises RunFailed in the test that needs it)."""

    def __init__(self):
        self.work = pathlib.Path(tempfile.mkdtemp(prefix="arwkv-notebooks-"))
        self.export_target = os.environ.get("ARWKV_EXPORT_TARGET", str(self.work / "export-target"))
        self.jobs = {}
        self.lock = threading.Lock()
        self.pool = None

    def start(self):
        with self.lock:
            if self.pool is not None:
                return
            self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=LANES)
            # The CPU runs an exported program must reproduce exactly: first, alone, one at a time.
            exact = [n for n in EXPORTED if n in selected()]
            for name in exact:
                self.jobs[("headless", name, "cpu")] = self.now(self.headless, name, "cpu")
            kind = lambda device: "cpu" if device == "cpu" else "gpu"
            headless = [(n, "cpu") for n in selected() if n not in exact]
            headless += [(n, d) for d in GPU_DEVICES for n in selected()]
            headless.sort(key=lambda run: -EXPECTED_S.get((run[0], kind(run[1])), 15))
            for name, device in headless:
                self.jobs[("headless", name, device)] = self.pool.submit(self.headless, name, device)
            # The exported programs are built in one lane, one after the other (they share a target
            # directory), once every run they export has started.
            builds = [(n, "cpu") for n in exact]
            builds += [(n, d) for d in GPU_DEVICES for n in GPU_EXPORTED if n in selected()]
            for name, device in builds:
                self.jobs[("build", name, device)] = concurrent.futures.Future()
            self.pool.submit(self.export_builds, builds)
            for device in GPU_DEVICES:
                self.jobs[("device-cells", "", device)] = self.pool.submit(self.device_cells, device)
            for name, device, params in jupyter_execute_runs():
                self.jobs[("jupyter-execute", name, device)] = self.pool.submit(self.jupyter_execute, name,
                                                                                device, params)

    def now(self, fn, *args):
        future = concurrent.futures.Future()
        try:
            future.set_result(fn(*args))
        except Exception as e:  # the test that needs it reports it
            future.set_exception(e)
        return future

    def result(self, kind, name, device):
        self.start()
        return self.jobs[(kind, name, device)].result()

    def wait_for_all(self):
        """Returns when no run is left, so what runs next has the cores to itself."""
        self.start()
        concurrent.futures.wait(list(self.jobs.values()))

    def close(self):
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self.work, ignore_errors=True)

    def headless(self, name, device):
        cwd = self.work / f"{name}-{device}"
        cwd.mkdir()
        out = cwd / f"{name}.ipynb"
        params = SMALL[name] if device == "cpu" else gpu_params(name, device)
        started = time.time()
        check(run_headless(name, cwd, params, out), f"{name} on {device}")
        print(f"\n{name} on {device}: {time.time() - started:.0f} s", file=sys.stderr)
        return cwd, out, nbformat.read(out, as_version=4)

    def export_builds(self, builds):
        for name, device in builds:
            future = self.jobs[("build", name, device)]
            try:
                future.set_result(self.export_build(name, device))
            except Exception as e:  # the test that needs it reports it
                future.set_exception(e)

    def export_build(self, name, device):
        """Exports the executed notebook and builds it (release, offline); returns a copy of the
        program beside the run (the CPU and the GPU exports of a notebook are one package name in
        one target directory: the next build would overwrite it)."""
        cwd, executed, _ = self.result("headless", name, device)
        project = cwd / "export"
        check(subprocess.run([KERNEL_BIN, "export", str(executed), "--out", str(project)],
                             capture_output=True, text=True, timeout=600), f"exporting {name}")
        env = dict(os.environ, CARGO_TARGET_DIR=self.export_target)
        check(subprocess.run(["cargo", "build", "--release", "--locked", "--offline", "--quiet"],
                             cwd=project, env=env, capture_output=True, text=True, timeout=3600),
              f"building exported {name} ({device})")
        package = next(l.split('"')[1] for l in (project / "Cargo.toml").read_text().splitlines()
                       if l.startswith("name = "))
        program = cwd / f"{package}-exported"
        shutil.copy2(pathlib.Path(self.export_target) / "release" / package, program)
        return program

    def device_cells(self, device):
        cwd = self.work / f"device-cells-{device}"
        cwd.mkdir()
        out = cwd / "device_cells.ipynb"
        check(subprocess.run([KERNEL_BIN, "run", str(DEVICE_CELLS), "--out", str(out), "-p", f"device={device}"],
                             cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT), f"device cells on {device}")
        return nbformat.read(out, as_version=4)

    def jupyter_execute(self, name, device, params):
        nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        if params:
            inject(nb, params)
        cwd = self.work / f"jupyter-execute-{name}-{device}"
        cwd.mkdir()
        path = cwd / f"{name}.ipynb"
        nbformat.write(nb, path)
        check(subprocess.run(
            [str(pathlib.Path(sys.executable).parent / "jupyter"), "execute", f"--kernel_name={KERNEL}",
             "--inplace", f"--timeout={TIMEOUT}", f"--startup_timeout={TIMEOUT}", str(path)],
            cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT), f"jupyter execute {name} on {device}")
        return nbformat.read(path, as_version=4)


def jupyter_execute_runs():
    runs = [(n, "cpu", SMALL[n]) for n in jupyter_execute_selected()]
    runs += [(n, d, gpu_params(n, d)) for d in GPU_DEVICES for n in GPU_JUPYTER_EXECUTE if n in selected()]
    return runs


RUNS = Runs()


def tearDownModule():
    RUNS.close()


class Headless(unittest.TestCase):
    """Every notebook, headless, then the exported programs of two of them."""

    def run_notebook(self, name, device="cpu"):
        return RUNS.result("headless", name, device)

    def test_every_notebook_runs_on_the_gpu_backend_with_the_cpu_metrics(self):
        if not GPU_DEVICES:
            self.skipTest("the kernel's prelude has no GPU backend (ARWKV_KERNEL_FEATURES)")
        for device in GPU_DEVICES:
            for name in selected():
                with self.subTest(notebook=name, device=device):
                    _, _, cpu = self.run_notebook(name)
                    _, _, gpu = self.run_notebook(name, device)
                    code = [c for c in gpu.cells if c.cell_type == "code"]
                    self.assertTrue(all(c.execution_count for c in code), "every code cell ran")
                    for cell in code:
                        for o in cell.outputs:
                            self.assertNotEqual(o.output_type, "error", cell.source)
                    got, want = metrics_lines(notebook_text(gpu)), metrics_lines(notebook_text(cpu))
                    print(f"{name}: cpu {want[0]}\n{name}: {device} {got[0] if got else None}", file=sys.stderr)
                    assert_metrics_close(self, got, want, f"{name} on {device} vs cpu")

    def test_gpu_models_and_tensors_survive_from_cell_to_cell_in_the_runner(self):
        if not GPU_DEVICES:
            self.skipTest("the kernel's prelude has no GPU backend (ARWKV_KERNEL_FEATURES)")
        for device in GPU_DEVICES:
            with self.subTest(device=device):
                lines = metrics_lines(notebook_text(RUNS.result("device-cells", "", device)))
                self.assertEqual(len(lines), 1)
                self.assertEqual(metrics_values(lines[0])[1], {"generated": 6.0, "steps": 2.0})

    def test_exported_programs_run_on_the_gpu_backend(self):
        if not GPU_DEVICES:
            self.skipTest("the kernel's prelude has no GPU backend (ARWKV_KERNEL_FEATURES)")
        for device in GPU_DEVICES:
            for name in [n for n in GPU_EXPORTED if n in selected()]:
                with self.subTest(notebook=name, device=device):
                    cwd, executed, nb = self.run_notebook(name, device)
                    stdout = self.run_program(name, device, cwd, executed)
                    assert_metrics_close(self, metrics_lines(stdout), metrics_lines(notebook_text(nb)),
                                         f"exported {name} on {device}")

    def run_program(self, name, device, cwd, executed):
        """Runs the exported program once every other run is over; returns its stdout."""
        program = RUNS.result("build", name, device)
        RUNS.wait_for_all()
        run_dir = cwd / "program-run"
        run_dir.mkdir()
        done = check(subprocess.run([str(program)], cwd=run_dir, capture_output=True, text=True, timeout=TIMEOUT),
                     f"the exported {name} ({device})")
        self.assertTrue((run_dir / "arwkv-displays").is_dir() or "display" not in executed.read_text(),
                        "displays became HTML files")
        return done.stdout

    def test_every_notebook_runs_headless_and_saves_its_outputs(self):
        for name in selected():
            with self.subTest(notebook=name):
                _, _, nb = self.run_notebook(name)
                code = [c for c in nb.cells if c.cell_type == "code"]
                self.assertTrue(all(c.execution_count for c in code), "every code cell ran")
                counts = [c.execution_count for c in code]
                self.assertEqual(counts, list(range(1, len(code) + 1)))
                self.assertEqual(len(metrics_lines(notebook_text(nb))), 1, "one final-metrics line")
                if SMALL[name]:
                    self.assertIn("injected-parameters", code[1].metadata.get("tags", []))
                for cell in code:
                    for o in cell.outputs:
                        self.assertNotEqual(o.output_type, "error", cell.source)
                        if o.output_type == "display_data" and "data-series=" in o.data.get("text/html", ""):
                            self.assertIn(PLOTLY, o.data, "a saved loss plot ends as the Plotly figure")
                        if o.output_type == "display_data" and PLOTLY in o.data:
                            points = sum(len(t.get("x", t.get("z", []))) for t in o.data[PLOTLY]["data"])
                            self.assertGreater(points, 0, "a saved plot holds its final curve")

    def test_exported_programs_reproduce_the_notebook_metrics(self):
        for name in EXPORTED:
            if name not in selected():
                continue
            with self.subTest(notebook=name):
                cwd, executed, nb = self.run_notebook(name)
                stdout = self.run_program(name, "cpu", cwd, executed)
                expected = metrics_lines(notebook_text(nb))
                self.assertEqual(len(expected), 1)
                self.assertEqual(metrics_lines(stdout), expected,
                                 "the exported program prints the notebook's final metrics exactly")


class JupyterExecute(unittest.TestCase):
    """The same notebooks through nbclient (`jupyter execute`), with the same small parameters (and
    one of them on the GPU backend)."""

    def test_every_notebook_runs_in_jupyter_execute(self):
        for name, device, _ in jupyter_execute_runs():
            with self.subTest(notebook=name, device=device):
                saved = RUNS.result("jupyter-execute", name, device)
                self.assertEqual(len(metrics_lines(notebook_text(saved))), 1)


class RunnerErrorsAndScripts(unittest.TestCase):
    """Plain Rust notebooks (no prelude needed): errors of the runner, the percent script."""

    def notebook(self, cells, tmp):
        nb = nbformat.v4.new_notebook()
        for src, tags in cells:
            nb.cells.append(nbformat.v4.new_code_cell(src, metadata={"tags": tags}))
        path = pathlib.Path(tmp) / "small.ipynb"
        nbformat.write(nb, path)
        return path

    def run_kernel(self, *args, cwd):
        env = dict(os.environ, ARWKV_KERNEL_NO_PRELUDE="1")
        return subprocess.run([KERNEL_BIN, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)

    def test_a_failing_cell_stops_the_run_and_is_named(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = self.notebook([("let steps: u32 = 3;", ["parameters"]), ("println!(\"steps {steps}\");", []),
                                  ("let x: u32 = \"nope\".parse().unwrap();", []), ("println!(\"never\");", [])], tmp)
            done = self.run_kernel("run", str(path), "-p", "steps=5", "--out", str(pathlib.Path(tmp) / "out.ipynb"),
                                   cwd=tmp)
            self.assertNotEqual(done.returncode, 0)
            self.assertIn("cell 4 (In [4]) failed", done.stderr)
            saved = nbformat.read(pathlib.Path(tmp) / "out.ipynb", as_version=4)
            self.assertIn("steps 5", notebook_text(saved), "the injected parameter was used")
            errors = [o for c in saved.cells for o in c.get("outputs", []) if o.output_type == "error"]
            self.assertEqual(len(errors), 1)
            self.assertIsNone(saved.cells[4].execution_count, "cells after the failure did not run")

    def test_an_unknown_parameter_is_refused_before_anything_runs(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = self.notebook([("let steps: u32 = 3;", ["parameters"])], tmp)
            done = self.run_kernel("run", str(path), "-p", "stpes=5", cwd=tmp)
            self.assertNotEqual(done.returncode, 0)
            self.assertIn("unknown parameter `stpes`", done.stderr)

    def test_percent_scripts_round_trip_through_jupytext(self):
        import jupytext

        with tempfile.TemporaryDirectory() as tmp:
            for name in selected():
                with self.subTest(notebook=name):
                    script = pathlib.Path(tmp) / f"{name}.rs"
                    done = self.run_kernel("export", str(NOTEBOOKS / f"{name}.ipynb"), "--format", "rs:percent",
                                           "--out", str(script), cwd=tmp)
                    self.assertEqual(done.returncode, 0, done.stderr)
                    back = jupytext.read(script)
                    original = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
                    self.assertEqual([(c.cell_type, c.source) for c in back.cells],
                                     [(c.cell_type, c.source) for c in original.cells])
                    self.assertEqual(back.metadata["kernelspec"]["name"], "arwkv")


if __name__ == "__main__":
    unittest.main()
