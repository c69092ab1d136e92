"""The HTML report: after the smoke run, `snakemake --report` holds every figure and table of the
paper (the list in helpers.py, the one place that names them), byte for byte; and the report,
rendered in headless Chromium, displays each figure and shows each table to a reader who clicks
through its categories."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
from helpers import PAPER_FIGURES, PAPER_TABLES, snakemake

pytestmark = [pytest.mark.slow, pytest.mark.report]

EXPECTED = PAPER_FIGURES + PAPER_TABLES
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--virtual-time-budget=20000",  # lets the report's React app render before the DOM is dumped
]

# Appended to a copy of report.html. With a category in the URL fragment, it opens that category
# in the menu as a reader would, then each result listed there: the eye button of a figure (which
# shows the image), the info button of a table (whose caption holds the table, see
# workflow/report/table1.rst; the eye of a CSV only downloads it). After each click it records the
# images on the page (source and decoded width: 0 = not shown) and the text of the HTML tables.
# The record lands as JSON in <pre id="replicate-probe">, which --dump-dom then shows.
PROBE_JS = """
window.addEventListener("load", async () => {
  const target = decodeURIComponent(location.hash.slice(1));
  const wait = (ms) => new Promise((done) => setTimeout(done, ms));
  const category = () => [...document.querySelectorAll("nav a")]
    .find((a) => a.innerText.trim() === target);
  const rows = () => [...document.querySelectorAll("tbody tr")]
    .filter((tr) => tr.querySelector("a[iconname=eye]"));
  const record = { text: "", views: [] };
  await wait(300);
  record.text = document.body.innerText;
  if (target && category()) {
    category().click();
    await wait(300);
    for (const file of rows().map((tr) => tr.cells[0].innerText.trim())) {
      const row = rows().find((tr) => tr.cells[0].innerText.trim() === file);
      const eye = row.querySelector("a[iconname=eye]");
      (eye.hasAttribute("download") ? row.querySelector("a[iconname=information-circle]") : eye)
        .click();
      await wait(500);
      record.views.push({
        file,
        images: [...document.querySelectorAll("img")]
          .map((img) => ({ src: img.src, width: img.naturalWidth })),
        tables: [...document.querySelectorAll("table.docutils")].map((t) => t.innerText),
      });
      if (category()) category().click();
      else app.showCategory(target);  // the info view replaces the menu; `app` is the report's
      await wait(300);
    }
  }
  const out = document.createElement("pre");
  out.id = "replicate-probe";
  out.textContent = JSON.stringify(record);
  document.body.appendChild(out);
});
"""


@pytest.fixture(scope="module")
def report_zip(smoke_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Outside the run directory: the other tests compare that run's results/ file by file.
    path = tmp_path_factory.mktemp("report") / "report.zip"
    snakemake(smoke_run, "--report", str(path), timeout=900)
    return path


def test_report_holds_every_figure_and_table(report_zip: Path, smoke_run: Path) -> None:
    with zipfile.ZipFile(report_zip) as z:
        by_name = {Path(n).name: n for n in z.namelist()}
        assert any(n.endswith("/report.html") for n in z.namelist())
        missing = [p for p in EXPECTED if Path(p).name not in by_name]
        assert not missing, f"not in the report: {missing}"
        for p in EXPECTED:
            assert z.read(by_name[Path(p).name]) == (smoke_run / p).read_bytes(), p


def _chromium() -> str:
    """The Chromium binary; installed with apt-get when missing and we are root, else a failure."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe:
        return exe
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.fail(
            "chromium is not installed, and installing it needs root and apt-get: "
            "run `apt-get install -y chromium` (Debian) as root, then rerun"
        )
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["timeout", "-k", "10", "900", "apt-get", "install", "-y", "--no-install-recommends"]
    proc = subprocess.run([*cmd, "chromium"], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        subprocess.run(["timeout", "-k", "10", "600", "apt-get", "update"], capture_output=True)
        proc = subprocess.run([*cmd, "chromium"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, f"apt-get install chromium failed:\n{proc.stderr[-3000:]}"
    exe = shutil.which("chromium")
    assert exe, "chromium installed but not on PATH"
    return exe


def _render(exe: str, page: Path, category: str, profile: Path) -> dict:
    """What the probe recorded in a fresh headless Chromium: the first view's text, and each
    result of ``category`` as shown after its button was clicked."""
    shutil.rmtree(profile, ignore_errors=True)
    url = page.as_uri() + "#" + category
    cmd = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", url]
    proc = subprocess.run(["timeout", "-k", "5", "120", *cmd], capture_output=True, text=True)
    assert proc.returncode == 0, f"chromium failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    probes = re.findall(r'<pre id="replicate-probe">(.*?)</pre>', proc.stdout, flags=re.S)
    assert probes, "the report did not render (no probe output in the DOM)"
    return json.loads(html.unescape(probes[-1]))


def test_report_shows_every_figure_in_chromium(report_zip: Path, tmp_path: Path) -> None:
    exe = _chromium()
    with zipfile.ZipFile(report_zip) as z:
        z.extractall(tmp_path)
    (page,) = tmp_path.rglob("report.html")
    source = page.read_text()
    head, tail = source.rsplit("</body>", 1)
    probe = page.with_name("probe.html")
    probe.write_text(f"{head}<script>{PROBE_JS}</script></body>{tail}")

    first = _render(exe, probe, "", tmp_path / "chromium")["text"]
    assert "Xiao, Yan & Amit" in first, "the workflow description (workflow.rst) is not shown"
    # The menu lists the result categories under RESULTS, one per line.
    menu = first.split("RESULTS", 1)[1].strip().split("\n\n", 1)[0]
    categories = [c.strip() for c in menu.splitlines() if c.strip()]
    assert categories, f"no result categories in the rendered menu:\n{first[:2000]}"
    views = [v for c in categories for v in _render(exe, probe, c, tmp_path / "chromium")["views"]]
    shown = {v["file"]: v for v in views}
    missing = [p for p in EXPECTED if p not in shown]
    assert not missing, f"not listed by the rendered report: {missing}"
    for p in PAPER_FIGURES:
        # The image of this very file (a stale one from the previous click would have another
        # name), decoded by the browser: a broken image has width 0.
        widths = [i["width"] for i in shown[p]["images"] if i["src"].endswith("/" + Path(p).name)]
        images = [i for i in shown[p]["images"] if not i["src"].startswith("data:")]
        assert widths and min(widths) > 0, f"{p} is not shown; images on the page: {images}"
    for p in PAPER_TABLES:
        columns = next(tmp_path.rglob(Path(p).name)).read_text().splitlines()[0].split(",")
        assert any(all(c in t for c in columns) for t in shown[p]["tables"]), (
            f"{p} is not shown as a table (columns {columns}): {shown[p]['tables']}"
        )
