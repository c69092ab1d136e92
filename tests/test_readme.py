"""The README's library example runs as printed and does what it says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example(subsection: str) -> str:
    """The Python block of one subsection of the README's "Using the method on your own problem"."""
    text = README.read_text()
    section = text.split("## Using the method on your own problem", 1)[1].split("\n## ", 1)[0]
    part = section.split(f"### {subsection}\n", 1)[1].split("\n### ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", part, flags=re.S)
    assert len(blocks) == 1, f"the subsection {subsection!r} should hold exactly one python block"
    return blocks[0]


def test_readme_example_trains_a_flow_that_classifies_and_samples_the_right_mode(capsys):
    namespace: dict[str, object] = {}
    code = readme_example("A label as the condition")
    exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 - our own README
    labels, predicted = namespace["labels"], namespace["predicted"]
    accuracy = (predicted == labels).float().mean().item()
    assert accuracy > 0.98  # Bayes-optimal accuracy is 1.000 for this mixture
    assert f"accuracy {accuracy:.3f}" in capsys.readouterr().out
    # Samples for c[0] lie around the mode that carries its label (std 0.2 per coordinate).
    mixture, c, samples = namespace["mixture"], namespace["c"], namespace["samples"]
    centre = mixture.means[mixture.mode_labels == c[0].argmax()][0]
    assert samples.shape == (1000, 2)
    assert (samples - centre).norm(dim=1).median() < 0.5
    log_density = namespace["log_density"]
    assert log_density.shape == (5,) and torch.isfinite(log_density).all()


def test_readme_continuous_example_recovers_the_exact_posterior(capsys):
    namespace: dict[str, object] = {}
    code = readme_example("A continuous, noisy observation")
    exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 - our own README
    samples, errors, result = namespace["samples"], namespace["errors"], namespace["result"]
    assert samples.shape == (100, 1000, 2) and samples.dtype == torch.float32
    assert errors["kl"] < 0.1 and abs(errors["std_ratio"] - 1) < 0.15, errors
    assert result.validation[result.best_segment - 1] == min(result.validation)
    out = capsys.readouterr().out
    assert f"KL to the exact posterior {errors['kl']:.3f}" in out and "best epoch" in out


@pytest.mark.parametrize("page", [README, *sorted((README.parent / "docs").glob("*.md"))], ids=str)
def test_every_relative_link_and_image_exists(page: Path) -> None:
    # Published results move between runs; a page pointing at a removed folder must fail here.
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)\s]*)?\)", page.read_text())
    local = [t for t in targets if "://" not in t]
    assert local or page != README, "the README should link to its results and guides"
    missing = [t for t in local if not (page.parent / t).exists()]
    assert not missing, f"{page.name} links to files that do not exist: {missing}"


def test_the_readme_is_a_front_door() -> None:
    """Under 250 lines, and every page of docs/ one click from it."""
    text = README.read_text()
    assert len(text.splitlines()) < 250
    for page in (README.parent / "docs").glob("*.md"):
        assert f"](docs/{page.name}" in text, f"the README does not link docs/{page.name}"


def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation but hyphens dropped, each
    space a hyphen."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("page", [README, *sorted((README.parent / "docs").glob("*.md"))], ids=str)
def test_every_anchor_names_a_heading_of_its_page(page: Path) -> None:
    for target, anchor in re.findall(r"\]\(([^)#\s]*)#([^)\s]+)\)", page.read_text()):
        linked = (page.parent / target) if target else page
        text = linked.read_text()
        anchors = {_slug(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}
        anchors |= set(re.findall(r'<a id="([^"]+)">', text))
        assert anchor in anchors, f"{page.name}: no heading or <a id> for #{anchor}"


@pytest.mark.parametrize("page", [README, *sorted((README.parent / "docs").glob("*.md"))], ids=str)
def test_every_test_a_page_names_exists(page: Path) -> None:
    """``tests/<file>.py::<test>`` (or ``::<test>`` after one in the same cell) names a test
    that is there: tests move between modules, the pages must follow."""
    for cell in page.read_text().split("|"):
        current = None
        for path, name in re.findall(r"`(tests/[\w/]+\.py)?::(\w+)`", cell):
            current = path or current
            assert current, f"{page.name}: ::{name} without a test file before it"
            source = (README.parent / current).read_text()
            assert f"def {name}(" in source, f"{page.name}: {current}::{name} does not exist"
