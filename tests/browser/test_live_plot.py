"""Live loss plots in a real browser: JupyterLab 4 and Notebook 7 (from the test venv, one Jupyter
server) in headless Chromium (Debian's `chromium`, driven by Playwright for Python), the `arwkv`
kernel, notebook 02-stage1-alignment with a short budget, Run All through the UI. Asserts from the
page that

* while the training cell runs, the loss plot is redrawn with a growing number of points;
* at the end the plot is an interactive Plotly figure (plotly.js graph with its mode bar) whose
  every trace holds one point per training step.

Screenshots of a mid-run and the final frame are written under the run's temporary directory
(printed; kept when the test fails, and always when ARWKV_BROWSER_KEEP=1).

Env: ARWKV_KERNEL_NAME (kernelspec, default arwkv, installed into JUPYTER_PATH beforehand),
ARWKV_CHROMIUM (default /usr/bin/chromium), ARWKV_BROWSER_STEPS (default 40),
ARWKV_BROWSER_TIMEOUT (seconds for the whole notebook, default 1200).
"""

import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request
import uuid

from playwright.sync_api import sync_playwright

ROOT = pathlib.Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "02-stage1-alignment.ipynb"
KERNEL = os.environ.get("ARWKV_KERNEL_NAME", "arwkv")
CHROMIUM = os.environ.get("ARWKV_CHROMIUM", "/usr/bin/chromium")
STEPS = int(os.environ.get("ARWKV_BROWSER_STEPS", "40"))
TIMEOUT = float(os.environ.get("ARWKV_BROWSER_TIMEOUT", "1200"))
METRICS = "final metrics stage1"

# What the page shows of the loss plot: the live SVG chart's points per series, and the Plotly
# figure's points per trace once it is there.
PROBE = """() => {
  const svg = {};
  for (const line of document.querySelectorAll('.jp-OutputArea polyline[data-series]')) {
    const pts = (line.getAttribute('points') || '').trim();
    svg[line.getAttribute('data-series')] = pts ? pts.split(/\\s+/).length : 0;
  }
  const plots = [...document.querySelectorAll('.jp-OutputArea .js-plotly-plot')].map(el => ({
    traces: (el.data || []).map(t => ({name: t.name, points: (t.x || []).length})),
    modebar: !!el.querySelector('.modebar'),
    interactive: !!el._fullLayout && !!el.querySelector('.draglayer'),
  }));
  const busy = [...document.querySelectorAll('.jp-InputArea-prompt')]
    .some(p => p.textContent.includes('*'));
  const text = [...document.querySelectorAll('.jp-OutputArea-output')].map(o => o.innerText).join('\\n');
  const errors = [...document.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')]
    .map(o => o.innerText).filter(t => /error|panicked/i.test(t));
  return {svg, plots, busy, done: text.includes(%s), errors};
}""" % json.dumps(METRICS)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def short_notebook(dest, out_dir):
    """Notebook 02 with `steps` and `out_dir` set for this run (as a user would edit them)."""
    nb = json.loads(NOTEBOOK.read_text())
    params = next(c for c in nb["cells"] if c["cell_type"] == "code")
    source = "".join(params["source"])
    for old, new in ((f"let steps: u64 = ", f"let steps: u64 = {STEPS}; //"),
                     ('let out_dir: &str = ', f"let out_dir: &str = {json.dumps(str(out_dir))}; //")):
        assert old in source, f"notebook 02's parameters cell no longer has `{old}`"
        source = source.replace(old, new)
    params["source"] = source
    nb["metadata"]["kernelspec"] = {"name": KERNEL, "display_name": "Rust (ARWKV Lab)", "language": "rust"}
    dest.write_text(json.dumps(nb))


class LivePlotInJupyterLab(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.work = pathlib.Path(tempfile.mkdtemp(prefix="arwkv-browser-"))
        cls.shots = cls.work / "screenshots"
        cls.shots.mkdir()
        root = cls.work / "lab"
        root.mkdir()
        for front_end in cls.FRONT_ENDS:
            short_notebook(root / f"live-{front_end}.ipynb", cls.work / f"run-{front_end}")
        cls.token = uuid.uuid4().hex
        cls.port = free_port()
        cls.url = f"http://127.0.0.1:{cls.port}"
        cls.log = open(cls.work / "jupyterlab.log", "w")
        cls.lab = subprocess.Popen(
            [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root",
             f"--ServerApp.port={cls.port}", "--ServerApp.ip=127.0.0.1",
             f"--IdentityProvider.token={cls.token}", f"--ServerApp.root_dir={root}",
             "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
            stdout=cls.log, stderr=subprocess.STDOUT, cwd=root)
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"{cls.url}/api/status?token={cls.token}", timeout=2)
                break
            except OSError:
                if time.time() > deadline or cls.lab.poll() is not None:
                    raise RuntimeError(f"JupyterLab did not start; log: {cls.work / 'jupyterlab.log'}")
                time.sleep(0.5)
        print(f"\nbrowser test files: {cls.work}", file=sys.stderr)

    @classmethod
    def tearDownClass(cls):
        cls.lab.terminate()
        try:
            cls.lab.wait(timeout=30)
        except subprocess.TimeoutExpired:
            cls.lab.kill()
        cls.log.close()
        if cls.passed == len(cls.FRONT_ENDS) and os.environ.get("ARWKV_BROWSER_KEEP") != "1":
            shutil.rmtree(cls.work, ignore_errors=True)

    FRONT_ENDS = ("lab", "notebook7")
    passed = 0  # screenshots are kept unless every front end passed

    def tearDown(self):
        # One kernel at a time: a second one would need a second (cold) prelude build directory.
        self.shut_down_kernels()

    def shut_down_kernels(self):
        kernels_url = f"{self.url}/api/kernels"
        with urllib.request.urlopen(f"{kernels_url}?token={self.token}", timeout=10) as r:
            kernels = json.load(r)
        for k in kernels:
            req = urllib.request.Request(f"{kernels_url}/{k['id']}?token={self.token}", method="DELETE")
            urllib.request.urlopen(req, timeout=60).close()

    def test_jupyterlab_draws_a_growing_curve_and_ends_with_an_interactive_plotly_figure(self):
        self.run_in_browser("lab", "/lab/tree/live-lab.ipynb")

    def test_notebook7_draws_a_growing_curve_and_ends_with_an_interactive_plotly_figure(self):
        self.run_in_browser("notebook7", "/notebooks/live-notebook7.ipynb")

    def run_in_browser(self, front_end, path):
        shots = self.shots / front_end
        shots.mkdir()
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM, headless=True,
                args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                      "--disable-background-networking", "--disable-component-update", "--disable-sync"])
            page = browser.new_page(viewport={"width": 1280, "height": 1400})
            try:
                frames, mid_shot, final_shot = self.run_all(page, path, shots)
            finally:
                page.screenshot(path=str(shots / "last.png"), full_page=True)
                browser.close()
        self.check(frames, mid_shot)
        type(self).passed += 1

    def run_all(self, page, path, shots):
        page.goto(f"{self.url}{path}?token={self.token}")
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
        # Wait for the kernel to be attached (its name shown), then Run → Run All Cells from the menu.
        page.get_by_text("Rust (ARWKV Lab)").first.wait_for(timeout=120_000)
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()

        frames, mid_shot = [], None
        deadline = time.time() + TIMEOUT
        while True:
            state = page.evaluate(PROBE)
            frames.append((time.time(), state))
            self.assertFalse(state["errors"], f"a cell failed: {state['errors']}")
            drawn = state["svg"].get("loss", 0)
            if mid_shot is None and STEPS // 3 <= drawn < STEPS and not state["plots"]:
                # A frame that shows part of the curve while training is still under way.
                mid_shot = shots / "mid-run.png"
                page.screenshot(path=str(mid_shot), full_page=True)
            if state["done"] and not state["busy"]:
                break
            if time.time() > deadline:
                self.fail(f"the notebook did not finish in {TIMEOUT:.0f} s; last state {state}")
            time.sleep(0.25)
        final_shot = shots / "final.png"
        page.screenshot(path=str(final_shot), full_page=True)
        print(f"\nmid-run screenshot: {mid_shot}\nfinal screenshot: {final_shot}", file=sys.stderr)
        return frames, mid_shot, final_shot

    def check(self, frames, mid_shot):
        # While training: the drawn curve grew (several distinct, increasing point counts).
        live_counts = [f[1]["svg"]["loss"] for f in frames if f[1]["svg"].get("loss")]
        plotly_counts = [max((t["points"] for p in f[1]["plots"] for t in p["traces"]), default=0) for f in frames]
        distinct = sorted(set(live_counts))
        self.assertGreaterEqual(len(distinct), 3, "the live plot was not redrawn while training: points drawn "
                                f"as SVG {live_counts}, Plotly points per trace seen {sorted(set(plotly_counts))}")
        self.assertEqual(live_counts, sorted(live_counts), "the live curve only grows")
        self.assertIsNotNone(mid_shot)

        # At the end: one interactive Plotly figure, every trace with one point per step.
        final = frames[-1][1]
        self.assertEqual(len(final["plots"]), 1, f"one Plotly figure expected, page had {final['plots']}")
        plot = final["plots"][0]
        self.assertTrue(plot["modebar"] and plot["interactive"], f"not an interactive Plotly graph: {plot}")
        names = [t["name"] for t in plot["traces"]]
        self.assertIn("loss", names)
        self.assertTrue(any(n.startswith("layer ") for n in names), names)
        for trace in plot["traces"]:
            self.assertEqual(trace["points"], STEPS, f"trace {trace['name']}: {trace['points']} points")
        self.assertFalse(final["svg"], "the live chart was replaced by the Plotly figure")


if __name__ == "__main__":
    unittest.main()
