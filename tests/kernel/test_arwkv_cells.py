"""Cells against the preloaded `arwkv` (run by tests/kernel/run.sh after `arwkv-kernel install`
has pre-built the prelude):

* `use arwkv::…` works with no `:dep`;
* a LossPlot cell streams display_data, then update_display_data messages while it runs (the
  curve grows), the last one holding every point;
* a stage-1 training cell on the embedded tiny teacher is interrupted; the run finishes its step
  and returns, and the next cell reads the trained step count (> 0) from the notebook's state;
* nbclient executes tests/kernel/live_plot.ipynb and the saved notebook holds the final curve;
* two kernels type their variables with one shared rust-analyzer service, without seeing each
  other's cells, and each falls back to its own analyzer when the service is gone.
"""

import json
import re
import os
import pathlib
import signal
import tempfile
import time
import unittest

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import start_new_kernel

from tests.kernel import cells
from nbclient import NotebookClient

KERNEL = os.environ.get("ARWKV_KERNEL_NAME", "arwkv")
# The first cell links against the pre-built prelude; allow a cold cache.
TIMEOUT = float(os.environ.get("ARWKV_KERNEL_CELL_TIMEOUT", "600"))
HERE = pathlib.Path(__file__).parent
PLOTLY = "application/vnd.plotly.v1+json"
# Whether the kernelspec's prelude has the wgpu backend (run.sh installs it with `--features wgpu`).
GPU = "wgpu" in os.environ.get("ARWKV_KERNEL_FEATURES", "")


def run_cell(kc, code, timeout=TIMEOUT, **kw):
    return cells.run_cell(kc, code, timeout, **kw)


def result_text(outputs):
    results = [m for m in outputs if m["msg_type"] == "execute_result"]
    return results[0]["content"]["data"]["text/plain"] if results else None


def points(bundle):
    """Points drawn: the Plotly figure's (final bundle) or the SVG chart's (live bundles)."""
    if PLOTLY in bundle:
        return sum(len(trace["x"]) for trace in bundle[PLOTLY]["data"])
    return sum(len(p.split()) for p in re.findall(r'<polyline[^>]* points="([^"]*)"', bundle["text/html"]))


class ArwkvCells(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.km, cls.kc = start_new_kernel(kernel_name=KERNEL, startup_timeout=TIMEOUT)
        reply, _ = run_cell(cls.kc, "arwkv::notebook::in_kernel()")
        assert reply["status"] == "ok", reply

    @classmethod
    def tearDownClass(cls):
        cls.kc.stop_channels()
        cls.km.shutdown_kernel(now=True)

    def test_arwkv_is_usable_without_a_dep_line(self):
        reply, outputs = run_cell(self.kc, "arwkv::notebook::in_kernel()")
        self.assertEqual(reply["status"], "ok")
        self.assertEqual(result_text(outputs), "true")

    def test_a_second_kernel_beside_this_one_starts_without_rebuilding_the_prelude(self):
        # This class's kernel holds the pre-built build directory; the second one gets the next
        # directory of the pool, seeded from it with hard links. Were it rebuilt, the first cell
        # would stream cargo's "Compiling …" lines and take many minutes.
        km, kc = start_new_kernel(kernel_name=KERNEL, startup_timeout=TIMEOUT)
        try:
            started = time.monotonic()
            reply, outputs = run_cell(kc, "arwkv::notebook::in_kernel()")
            took = time.monotonic() - started
            self.assertEqual(reply["status"], "ok", reply)
            self.assertEqual(result_text(outputs), "true")
            streamed = "".join(m["content"].get("text", "") for m in outputs if m["msg_type"] == "stream")
            self.assertNotIn("Compiling", streamed, f"the second kernel rebuilt ({took:.0f} s):\n{streamed}")
            print(f"second kernel: first arwkv cell after {took:.1f} s", flush=True)
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=True)

    def test_a_loss_plot_grows_while_the_cell_runs_and_ends_on_every_point(self):
        code = (
            'let mut plot = LossPlot::new("demo").log_y(true);\n'
            "for i in 1..=60 { plot.push(\"loss\", i as f64, 1.0 / i as f64); "
            "std::thread::sleep(std::time::Duration::from_millis(25)); }\n"
            "plot.finish();"
        )
        reply, outputs = run_cell(self.kc, code)
        self.assertEqual(reply["status"], "ok", reply)
        shown = [m for m in outputs if m["msg_type"] == "display_data"]
        updates = [m for m in outputs if m["msg_type"] == "update_display_data"]
        self.assertEqual(len(shown), 1)
        # While running: HTML (SVG) that front ends redraw on every update; Plotly only at the end,
        # where the change of preferred MIME type makes JupyterLab build a fresh interactive figure.
        self.assertNotIn(PLOTLY, shown[0]["content"]["data"])
        self.assertIn("text/html", shown[0]["content"]["data"])
        display_id = shown[0]["content"]["transient"]["display_id"]
        self.assertGreaterEqual(len(updates), 2, "the curve should be updated while the cell runs")
        self.assertTrue(all(PLOTLY not in u["content"]["data"] for u in updates[:-1]))
        final = updates[-1]["content"]["data"]
        self.assertIn(PLOTLY, final)
        self.assertIn("text/html", final)
        self.assertIn("text/plain", final)
        counts = [points(u["content"]["data"]) for u in updates]
        self.assertEqual(counts, sorted(counts), "updates carry a growing curve")
        self.assertEqual(counts[-1], 60)
        self.assertTrue(all(u["content"]["transient"]["display_id"] == display_id for u in updates))

    def test_an_interrupted_training_cell_keeps_the_model_for_the_next_cell(self):
        out = tempfile.mkdtemp(prefix="arwkv-interrupt-")
        setup = (
            'let plan = arwkv::distill::preset::preset_plan("tiny").unwrap();\n'
            f"let mut cfg = plan.stage_config(arwkv::distill::run::Stage::Align, {json.dumps(out)}).unwrap();\n"
            "cfg.steps = 100_000; cfg.save_every = 100_000;"
        )
        reply, _ = run_cell(self.kc, setup)
        self.assertEqual(reply["status"], "ok", reply)
        msg_id = self.kc.execute(
            'let mut observer = NotebookObserver::new("stage 1");\n'
            "let summary = arwkv::distill::run::run(&cfg, arwkv::distill::run::Start::Overwrite, &mut observer).unwrap();"
        )
        # Wait until the curve is live (a few steps done), then interrupt.
        updates, deadline = 0, time.time() + TIMEOUT
        while updates < 2 and time.time() < deadline:
            msg = self.kc.get_iopub_msg(timeout=TIMEOUT)
            if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "update_display_data":
                updates += 1
        self.assertGreaterEqual(updates, 2, "no live plot updates from the training cell")
        self.km.interrupt_kernel()
        reply = self.kc.get_shell_msg(timeout=TIMEOUT)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = self.kc.get_shell_msg(timeout=TIMEOUT)
        self.assertEqual(reply["content"]["status"], "ok", reply["content"])
        reply, outputs = run_cell(self.kc, "(summary.interrupted, summary.steps > 0, observer.steps == summary.steps)")
        self.assertEqual(reply["status"], "ok", reply)
        self.assertEqual(result_text(outputs), "(true, true, true)")
        reply, outputs = run_cell(self.kc, "arwkv::distill::run::latest_checkpoint(&cfg.out).is_some()")
        self.assertEqual(result_text(outputs), "true", "the interrupted run saved its model")

    @unittest.skipUnless(GPU, "the kernel's prelude has no wgpu backend (ARWKV_KERNEL_FEATURES)")
    def test_a_model_on_the_gpu_backend_survives_later_cells_errors_and_training(self):
        out = tempfile.mkdtemp(prefix="arwkv-gpu-cells-")
        steps = [
            ('unsafe { std::env::set_var("ARWKV_DEVICE", "wgpu") }\n'
             "let gdev = arwkv::device::current_device().unwrap();\n"
             "let gdir = arwkv::embedded::tiny_assets().join(\"teacher\").display().to_string();\n"
             "let gmodel = arwkv::pretrained::Pretrained::load(&gdir, &gdev).unwrap();\n"
             "let gones = burn::Tensor::<2>::ones([2, 3], &gdev);", "ok", None),
            ("gones.clone().sum().into_scalar::<f32>()", "ok", "6.0"),
            ('let gtext = gmodel.complete("KING HENRY.\\n", 8, &gdev).unwrap();', "ok", None),
            ('panic!("a failing cell in between")', "error", None),
            ('let broken: u32 = "not a number";', "error", None),
            ('gmodel.complete("KING HENRY.\\n", 8, &gdev).unwrap() == gtext', "ok", "true"),
            ("let mut gcfg = arwkv::distill::preset::preset_plan(\"tiny\").unwrap()\n"
             f"    .stage_config(arwkv::distill::run::Stage::Align, {json.dumps(out)}).unwrap();\n"
             'gcfg.device = "wgpu".into(); gcfg.steps = 2; gcfg.save_every = 2;\n'
             'let mut gobs = NotebookObserver::new("stage 1 on wgpu");\n'
             "let gsummary = arwkv::distill::run::run(&gcfg, arwkv::distill::run::Start::Overwrite, &mut gobs).unwrap();", "ok", None),
            ("let gconfig = arwkv::generation::GenerationConfig { max_new_tokens: 4, ..Default::default() };\n"
             "arwkv::generation::generate(&gsummary.student, &[1, 2, 3], &gconfig, &gdev, |_| Ok(())).unwrap().len()",
             "ok", "4"),
        ]
        for code, status, text in steps:
            reply, outputs = run_cell(self.kc, code)
            self.assertEqual(reply["status"], status, (code, reply, outputs[-3:]))
            if text is not None:
                self.assertEqual(result_text(outputs), text, code)


class NbclientLivePlot(unittest.TestCase):
    """Runs after ArwkvCells has shut its kernel down, so this one gets the warm build dir."""

    def test_nbclient_saves_the_final_curve(self):
        nb = nbformat.read(HERE / "live_plot.ipynb", as_version=4)
        NotebookClient(nb, kernel_name=KERNEL, timeout=int(TIMEOUT)).execute()
        plots = [
            o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs
            if o.output_type == "display_data" and PLOTLY in o.data
        ]
        self.assertEqual(len(plots), 1)
        self.assertEqual(points(plots[0].data), 2 * 40, "both series, every point, in the saved notebook")


def analyzer_services():
    """PIDs of the running `arwkv-kernel analyzer-service` processes started for this kernelspec's
    prelude by its kernel binary (their `--manifest-from` is a build directory of its feature set;
    a service of an earlier build of the binary may still idle beside them)."""
    slot = "build-wgpu-" if GPU else "build-"
    kernel_exe = os.path.realpath(KernelSpecManager().get_kernel_spec(KERNEL).argv[0])
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = [a.decode(errors="replace") for a in f.read().split(b"\0")]
        except OSError:
            continue
        try:
            exe = os.readlink(f"/proc/{entry}/exe")
        except OSError:
            continue
        if exe == kernel_exe and "analyzer-service" in args and "--manifest-from" in args:
            source = pathlib.Path(args[args.index("--manifest-from") + 1]).name
            if source.startswith(slot) and source[len(slot):].isdigit():
                pids.append(int(entry))
    return sorted(pids)


class SharedAnalyzer(unittest.TestCase):
    """Runs last in this module: it stops the shared service on purpose."""

    def test_kernels_share_one_analyzer_and_fall_back_to_their_own_when_it_stops(self):
        km1, kc1 = start_new_kernel(kernel_name=KERNEL, startup_timeout=TIMEOUT)
        km2 = kc2 = None
        try:
            # An inferred `let` asks rust-analyzer: the shared service's.
            reply, outputs = run_cell(kc1, "let first = arwkv::notebook::in_kernel();\nfirst")
            self.assertEqual(reply["status"], "ok", reply)
            self.assertEqual(result_text(outputs), "true")
            services = analyzer_services()
            self.assertEqual(len(services), 1, "one analyzer service for this prelude")
            km2, kc2 = start_new_kernel(kernel_name=KERNEL, startup_timeout=TIMEOUT)
            reply, outputs = run_cell(kc2, "let second = vec![1u8, 2, 3];\nsecond.len()")
            self.assertEqual(reply["status"], "ok", reply)
            self.assertEqual(result_text(outputs), "3")
            self.assertEqual(analyzer_services(), services, "the second kernel used the same service")
            # Each query carries its own kernel's code: one name, two types, each kernel its own.
            for kc, value in ((kc1, "7u8"), (kc2, '"seven"')):
                reply, _ = run_cell(kc, f"let same_name = {value};")
                self.assertEqual(reply["status"], "ok", reply)
            for kc, code, want in ((kc1, "let copy = same_name;\ncopy + 1", "8"),
                                   (kc2, "let copy = same_name;\ncopy.len()", "5")):
                reply, outputs = run_cell(kc, code)
                self.assertEqual(reply["status"], "ok", reply)
                self.assertEqual(result_text(outputs), want)
            os.kill(services[0], signal.SIGKILL)
            deadline = time.monotonic() + 30
            while services[0] in analyzer_services() and time.monotonic() < deadline:
                time.sleep(0.2)
            self.assertNotIn(services[0], analyzer_services())
            # Both kernels keep working on their own analyzer, variables intact.
            reply, outputs = run_cell(kc1, "let third = first;\nthird")
            self.assertEqual(reply["status"], "ok", reply)
            self.assertEqual(result_text(outputs), "true")
            reply, outputs = run_cell(kc2, "let fourth = second.clone();\nfourth.len()")
            self.assertEqual(reply["status"], "ok", reply)
            self.assertEqual(result_text(outputs), "3")
        finally:
            for km, kc in ((km1, kc1), (km2, kc2)):
                if kc is not None:
                    kc.stop_channels()
                    km.shutdown_kernel(now=True)


if __name__ == "__main__":
    unittest.main()
