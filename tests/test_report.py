"""The HTML report: after the smoke run, `snakemake --report` holds every figure and table of the
paper (the list in conftest.py, the one place that names them), byte for byte; and the report,
rendered in headless Chromium, shows each of them to a reader who opens its category."""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
from conftest import PAPER_FIGURES, PAPER_TABLES, snakemake

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

# Appended to a copy of report.html: with a category in the URL fragment, click it in the menu as a
# reader would, then each entry it lists; without one, only record the first view. The text of
# every view passed through lands in <pre id="replicate-probe">, which --dump-dom then shows.
PROBE_JS = """
window.addEventListener("load", () => {
  const target = decodeURIComponent(location.hash.slice(1));
  const seen = [];
  const links = () => [...document.querySelectorAll("nav a")];
  const finish = () => {
    const out = document.createElement("pre");
    out.id = "replicate-probe";
    out.textContent = seen.join("\\n");
    document.body.appendChild(out);
  };
  setTimeout(() => {
    seen.push(document.body.innerText);
    const category = links().find((a) => a.innerText.trim() === target);
    if (!category) return finish();
    category.click();
    setTimeout(() => {
      seen.push(document.body.innerText);
      const entries = links().map((a) => a.innerText.trim()).filter((t) => t);
      let i = 0;
      const next = () => {
        if (i >= entries.length) return finish();
        const link = links().find((a) => a.innerText.trim() === entries[i]);
        i += 1;
        if (link) link.click();
        setTimeout(() => {
          seen.push(document.body.innerText);
          next();
        }, 100);
      };
      next();
    }, 200);
  }, 300);
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
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe:
        return exe
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("chromium is not installed and installing it (apt-get) needs root")
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


def _render(exe: str, page: Path, fragment: str, profile: Path) -> str:
    """Text of every view the probe passed through, from a fresh headless Chromium."""
    shutil.rmtree(profile, ignore_errors=True)
    url = page.as_uri() + "#" + fragment
    cmd = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", url]
    proc = subprocess.run(["timeout", "-k", "5", "120", *cmd], capture_output=True, text=True)
    assert proc.returncode == 0, f"chromium failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    probes = re.findall(r'<pre id="replicate-probe">(.*?)</pre>', proc.stdout, flags=re.S)
    assert probes, "the report did not render (no probe output in the DOM)"
    return html.unescape(probes[-1])


def test_report_shows_every_figure_in_chromium(report_zip: Path, tmp_path: Path) -> None:
    exe = _chromium()
    with zipfile.ZipFile(report_zip) as z:
        z.extractall(tmp_path)
    (page,) = tmp_path.rglob("report.html")
    source = page.read_text()
    head, tail = source.rsplit("</body>", 1)
    probe = page.with_name("probe.html")
    probe.write_text(f"{head}<script>{PROBE_JS}</script></body>{tail}")

    first = _render(exe, probe, "", tmp_path / "chromium")
    assert "Xiao, Yan & Amit" in first, "the workflow description (workflow.rst) is not shown"
    # The menu lists the result categories under RESULTS, one per line.
    menu = first.split("RESULTS", 1)[1].strip().split("\n\n", 1)[0]
    categories = [c.strip() for c in menu.splitlines() if c.strip()]
    assert categories, f"no result categories in the rendered menu:\n{first[:2000]}"
    seen = "\n".join(_render(exe, probe, c, tmp_path / "chromium") for c in categories)
    missing = [p for p in EXPECTED if p not in seen]
    assert not missing, f"not shown by the rendered report: {missing}"
