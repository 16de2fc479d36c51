"""The VisualDL dashboard in a real browser: the README's command on a log folder laid out as
the pipeline writes it (training runs, the prune summary, an exported model), then the
scalars, histograms and images pages in headless Chromium, each checked for drawn data.

Chromium comes from the system (Debian's package); as root with apt-get it is installed when
missing, else the test is skipped with the reason. Everything stays on 127.0.0.1.
"""
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from cdp_browser import Browser, find_chromium

pytestmark = pytest.mark.slow
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the README's dashboard command, after `visualdl --logdir <folder>`
README_FLAGS = ["--component_tabs", "scalar", "histogram", "image", "text"]
# chromium resolves no name but the loopback address: nothing leaves the machine
LOOPBACK_ONLY = "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"


@pytest.fixture(scope="session")
def chromium():
    exe = find_chromium()
    if exe:
        return exe
    why = "no chromium on PATH"
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        try:
            for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
                r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)
                if r.returncode:
                    why += f"; `{' '.join(cmd)}` failed: {(r.stderr or r.stdout).strip()[-300:]}"
                    break
        except (OSError, subprocess.TimeoutExpired) as e:
            why += f"; apt-get did not finish: {e}"
        exe = find_chromium()
        if exe:
            return exe
    else:
        why += " and not root with apt-get to install it (apt-get install chromium)"
    pytest.skip(f"dashboard browser test needs Chromium: {why}")


def _pipeline_like_logs(out):
    """output/ as the pipeline leaves it, written by the project's own loggers."""
    import paddle
    from ppyolo_slim.engine.draw import draw_detections
    from ppyolo_slim.engine.logger import VisualDLLogger
    from ppyolo_slim.slim.report import write_visualdl
    rng = np.random.default_rng(0)
    sparse = out / "sparse"
    log = VisualDLLogger(str(sparse / "vdl"))
    for epoch in range(6):
        log.scalars({"train/box_loss": 0.1 / (epoch + 1), "train/obj_loss": 0.05 + 0.01 * rng.random(),
                     "val/mAP50-95": 0.02 * epoch}, epoch)
        log.histogram("sparsity/abs_gamma", np.abs(rng.normal(0, 1 / (epoch + 1), 800)), epoch)
    img = np.full((96, 128, 3), (40, 60, 200), np.uint8)
    log.image("val/img0.jpg", draw_detections(img, np.array([[10, 10, 70, 60, 0.9, 0]]), ["circle"]), 5)
    log.close()
    rep = {"params": {"before": 1000, "after": 300, "removed_share": 0.7},
           "channels": {"before": 96, "after": 24, "removed_share": 0.75},
           "flops": {"gflops_before": {"640": 4.1}, "gflops_after": {"640": 0.4}, "removed_share": {"640": 0.9}},
           "threshold": 0.01, "settings": {}, "layers": []}
    write_visualdl(rep, str(sparse / "vdl"), scores=np.abs(rng.normal(0, 0.5, 800)))
    # an exported model under the same folder: VisualDL adds a graph tab for it
    layer = paddle.nn.Conv2D(3, 4, 3)
    paddle.jit.save(layer, str(out / "export" / "sparse" / "model"),
                    input_spec=[paddle.static.InputSpec([1, 3, 16, 16], "float32", "images")])
    from ppyolo_slim.compat import saved_model_file
    assert (out / "export" / "sparse" / saved_model_file()).is_file()   # model.pdmodel, or model.json on Paddle 3


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def dashboard(tmp_path):
    out = tmp_path / "output"
    _pipeline_like_logs(out)
    exe = shutil.which("visualdl", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    assert exe, "visualdl's command is installed with the visualdl package"
    port = _free_port()
    proc = subprocess.Popen([exe, "--logdir", str(out), *README_FLAGS, "--host", "127.0.0.1",
                             "--port", str(port), "--disable-telemetry"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(url + "/app/api/component_tabs", timeout=5).read()
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail(f"visualdl did not start: {proc.stderr.read()[-2000:]}")
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# JS: coloured pixels (the runs' lines and areas, not the grey axes, grid and titles) in the
# page's chart canvases. VisualDL draws a chart's title into its canvas too, so the charts
# are narrowed to one tag with the page's search box first, and the charts shown before the
# search are not counted.
DRAWN = """(() => {
    let n = 0;
    for (const c of document.querySelectorAll('canvas')) {
        if (c.dataset.before) continue;             // a chart from before the search
        const ctx = c.getContext('2d');
        if (!ctx || !c.width || !c.height) continue;
        const d = ctx.getImageData(0, 0, c.width, c.height).data;
        for (let i = 0; i < d.length; i += 4) {
            const mx = Math.max(d[i], d[i + 1], d[i + 2]), mn = Math.min(d[i], d[i + 1], d[i + 2]);
            if (d[i + 3] > 0 && mx - mn > 60) n++;
        }
    }
    return n;
})()"""


def _show_tag(b, tag):
    """Type ``tag`` into the page's tag search: only the first group of charts starts open."""
    b.wait_for("!!document.querySelector('input[placeholder*=\"Search tags\"]')", timeout=60)
    b.evaluate("(() => { document.querySelectorAll('canvas').forEach(c => { c.dataset.before = 1; }); "
               "const i = document.querySelector('input[placeholder*=\"Search tags\"]'); "
               "i.focus(); i.select(); })()")
    b.send("Input.insertText", {"text": tag})


def _wait_drawn(b, tag, shot, timeout=90):
    """Show only ``tag``'s chart and wait until it has drawn data."""
    _show_tag(b, tag)
    try:
        b.wait_for(f"{DRAWN} > 300", timeout=timeout)
    finally:                       # the screenshot also tells what went wrong
        b.screenshot(shot)


def test_readme_names_the_command_and_the_pages():
    from ppyolo_slim.cli import dashboard_command
    assert dashboard_command("output/").split()[3:] == README_FLAGS     # what the tools print
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    assert "visualdl --logdir output/ " + " ".join(README_FLAGS) in readme
    assert "/app/sample/image" in readme and "/app/scalar" in readme


def test_dashboard_opens_on_scalars_and_every_page_shows_data(chromium, dashboard, tmp_path):
    shots = os.environ.get("PPYOLO_SLIM_SCREENSHOTS") or str(tmp_path / "screenshots")
    os.makedirs(shots, exist_ok=True)
    with Browser(chromium, str(tmp_path / "profile"), 1280, 900, extra_flags=[LOOPBACK_ONLY]) as b:
        # the landing page: scalars, not the exported model's graph
        b.open(dashboard + "/app/index")
        b.wait_for("location.pathname.endsWith('/app/scalar')", timeout=60)
        text = b.wait_for("document.body.innerText.includes('train') && document.body.innerText", timeout=60)
        assert "val" in text and "prune" in text
        _wait_drawn(b, "train/box_loss", os.path.join(shots, "scalars.png"))

        # histograms: the prune summary's |gamma| (one step) and the per-epoch one draw
        b.open(dashboard + "/app/histogram")
        _wait_drawn(b, "prune/abs_gamma", os.path.join(shots, "histograms.png"))
        _wait_drawn(b, "sparsity/abs_gamma", os.path.join(shots, "histograms_sparsity.png"))

        # images: the drawn val image and the prune plots load
        b.open(dashboard + "/app/sample/image")
        # the logged images arrive as blobs (the page fetches each one): 128x96 is ours
        sizes = b.wait_for("""(() => { const ok = [...document.images].filter(i => i.complete && i.naturalWidth > 0
                                          && i.src.startsWith('blob:'));
                                       return ok.length && ok.map(i => i.naturalWidth + 'x' + i.naturalHeight); })()""",
                           timeout=60)
        assert "128x96" in sizes, sizes
        assert re.search(r"prune/gamma_hist|val/img0", b.evaluate("document.body.innerText"))
        b.screenshot(os.path.join(shots, "images.png"))
        assert not [e for e in b.errors() if "Uncaught" in e], b.errors()
