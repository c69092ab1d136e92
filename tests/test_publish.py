"""Publishing a finished run for the README: every figure and table copied, job costs summed from
Snakemake's benchmark files, provenance written; an empty run is an error, not an empty folder."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from replicate.publish import job_costs, main, publish

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def _fake_run(root: Path) -> Path:
    (root / "results/figures").mkdir(parents=True)
    (root / "results/tables").mkdir(parents=True)
    (root / "results/benchmarks/gmm").mkdir(parents=True)
    (root / "results/benchmarks/latent").mkdir(parents=True)
    (root / "results/figures/fig5_1_gmm.png").write_bytes(b"\x89PNG fake")
    (root / "results/figures/fig5_1_gmm.pdf").write_bytes(b"%PDF fake")
    (root / "results/tables/table1.csv").write_text("dataset,accuracy_mean\nmnist,0.9\n")
    (root / "results/tables/table1.md").write_text("| dataset |\n")
    (root / "results/benchmarks/gmm/train_ours_all_seed0.tsv").write_text(
        HEADER + "10.0\t0:00:10\t200.0\t0\t0\t0\t0\t0\t50\t18.0\n"
    )
    (root / "results/benchmarks/latent/train_autoencoder_mnist.tsv").write_text(
        HEADER + "30.0\t0:00:30\t900.0\t0\t0\t0\t0\t0\t50\t55.0\n"
    )
    return root


def test_job_costs_reads_every_benchmark_file(tmp_path: Path) -> None:
    costs = job_costs(_fake_run(tmp_path))
    assert costs["job"].tolist() == ["gmm/train_ours_all_seed0", "latent/train_autoencoder_mnist"]
    assert costs["wall_clock_s"].tolist() == [10.0, 30.0]
    assert costs["cpu_s"].tolist() == [18.0, 55.0]


def test_publish_copies_figures_and_tables_and_sums_the_costs(tmp_path: Path) -> None:
    run = _fake_run(tmp_path / "run")
    main(["--run-dir", str(run), "--name", "quick", "--command", "snakemake --cores 2"])
    dest = run / "results/readme/quick"
    assert sorted(p.name for p in dest.iterdir()) == [
        "costs.csv",
        "costs.md",
        "fig5_1_gmm.png",
        "provenance.md",
        "table1.csv",
        "table1.md",
    ]
    assert (dest / "fig5_1_gmm.png").read_bytes() == b"\x89PNG fake"
    costs = pd.read_csv(dest / "costs.csv")
    total = costs.set_index("job").loc["total (sum over jobs)"]
    assert total["wall_clock_s"] == 40.0 and total["cpu_s"] == 73.0 and total["max_rss_mb"] == 900.0
    text = (dest / "provenance.md").read_text()
    assert "`snakemake --cores 2`" in text and "CPU cores" in text and "torch" in text


def test_publishing_a_run_that_made_nothing_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="run it first"):
        publish(tmp_path, "quick", "snakemake")
    assert not (tmp_path / "results/readme").exists()


def test_a_partial_run_publishes_its_extra_files(tmp_path: Path) -> None:
    (tmp_path / "results/gmm/eval").mkdir(parents=True)
    (tmp_path / "results/gmm/eval/ours_all_seed0.json").write_text('{"accuracy": 1.0}')
    dest = publish(tmp_path, "partial", "snakemake", extra=["results/gmm/eval/*.json"])
    assert (dest / "ours_all_seed0.json").read_text() == '{"accuracy": 1.0}'
    assert (dest / "provenance.md").is_file()
    assert not (dest / "costs.csv").exists()  # no benchmark file: no empty cost table


def test_a_run_made_elsewhere_is_published_with_its_own_machine_and_commit(
    tmp_path: Path,
) -> None:
    run = _fake_run(tmp_path / "run")
    machine = tmp_path / "machine.json"
    machine.write_text(
        '{"gpu": "NVIDIA H200", "cpu": "Xeon", "cpu_count": 16, "torch": "2.11.0", '
        '"cuda": "13.0", "python": "3.12.3"}'
    )
    main(
        ["--run-dir", str(run), "--name", "gpu", "--command", "snakemake --cores 16",
         "--machine-json", str(machine), "--commit", "abc1234"]
    )  # fmt: skip
    text = (run / "results/readme/gpu/provenance.md").read_text()
    assert "- commit: `abc1234`" in text
    assert "16 CPU cores (Xeon), CUDA GPU: NVIDIA H200 (CUDA 13.0)" in text
    assert "Python 3.12.3, torch 2.11.0" in text
