"""Training the Gaussian-mixture models: closed forms, exact posterior, end to end, divergence."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import killed_after_checkpoints
from safetensors.torch import load_file
from scipy.stats import multivariate_normal

from replicate.checkpoints import CheckpointMismatch
from replicate.config import ConfigError, check_config
from replicate.experiments.gmm.problem import GaussianMixture
from replicate.experiments.gmm.settings import MODEL_NAMES, model_names, training_settings
from replicate.experiments.gmm.stages import train_gmm_model
from replicate.experiments.gmm.training import gmm_model, load_gmm_model
from replicate.training import TrainingFiles

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
PAPER = yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def tiny_config(iterations: int = 3, network: str = "paper", **settings) -> dict:
    """The paper's gmm section shrunk to seconds: small network, data and budget.

    It holds one ``network`` (the named one of ``gmm.networks``, shrunk) in place of
    ``networks``, the shape :func:`training_settings` returns and the library takes.
    """
    cfg = copy.deepcopy(PAPER["gmm"])
    cfg.update(n_train=4096, batch_size=256, iterations=iterations)
    chosen = cfg.pop("networks")[network]
    del cfg["figure_network"]
    cfg["network"] = {**chosen, "n_blocks": 2, "hidden": 32, **settings}
    return cfg


def train(tmp_path: Path, name: str, cfg: dict, labels: str = "all", seed: int = 0) -> dict:
    stem = tmp_path / f"{name}_{labels}_seed{seed}"
    return train_gmm_model(
        name,
        training_settings(cfg, name),
        labels,
        seed,
        TrainingFiles(f"{stem}.safetensors", f"{stem}.json", history=f"{stem}_history.csv"),
        progress_every=0,
    )


# -- closed forms ---------------------------------------------------------------------------------
def test_nll_of_identity_flow_on_gaussian_data_equals_closed_form() -> None:
    cfg = tiny_config()
    cfg["ours"]["sigma"] = 0.0  # padding exactly zero, so the NLL is deterministic
    flow = gmm_model("ours", cfg, "all", seed=0).double()
    with torch.no_grad():
        for p in flow.network.blocks.parameters():
            p.zero_()
        n = flow.network.permutations
        flow.network.permutations.copy_(torch.arange(n.shape[1]).expand_as(n))
        flow.network.inverse_permutations.copy_(torch.arange(n.shape[1]).expand_as(n))
    # identity: [x (2), 0 (8)] -> z = x, c_hat = 0; NLL = -log N(x; 0, I) - log N(c; 0, eps^2 I)
    # up to the constants the training loss drops.
    eps = cfg["ours"]["eps"]
    x = torch.randn(7, 2, dtype=torch.float64)
    c = torch.eye(8, dtype=torch.float64)[torch.arange(7)]
    log_n = multivariate_normal(mean=np.zeros(2)).logpdf(x.numpy())
    log_c = multivariate_normal(mean=np.zeros(8), cov=eps**2).logpdf(c.numpy())
    const = 0.5 * 10 * math.log(2 * math.pi) + 8 * math.log(eps)
    expected = -(log_n + log_c) - const
    torch.testing.assert_close(flow.nll(x, c), torch.as_tensor(expected))


@pytest.mark.parametrize("label_map", ["all", "some"])
def test_exact_posterior_against_scipy(label_map: str) -> None:
    gm = GaussianMixture(label_map)
    x, _ = gm.sample(50, torch.Generator().manual_seed(3))
    dens = np.stack(
        [
            multivariate_normal(mean=m.numpy(), cov=gm.std**2).pdf(x.numpy())
            for m in gm.means.double()
        ],
        axis=1,
    )  # (n, 8) mode densities, each mode has prior 1/8
    joint = np.stack(
        [dens[:, gm.mode_labels.numpy() == k].sum(1) / 8 for k in range(gm.n_labels)], 1
    )
    expected = joint / joint.sum(1, keepdims=True)
    np.testing.assert_allclose(gm.posterior(x).numpy(), expected, rtol=1e-9, atol=1e-12)


# -- the model registry and interface -------------------------------------------------------------
def test_model_names_follow_the_configured_variants() -> None:
    assert tuple(model_names(PAPER["gmm"])) == MODEL_NAMES


def test_training_settings_drop_evaluation_keys_other_variants_and_other_networks() -> None:
    s = training_settings(PAPER["gmm"], "inn_forward_only", "reference")
    assert "n_test" not in s and "ours" not in s and "networks" not in s
    assert list(s["inn"]["variants"]) == ["forward_only"]
    assert s["network"] == PAPER["gmm"]["networks"]["reference"]
    assert training_settings(s, "inn_forward_only") == s  # a result is its own settings
    with pytest.raises(ValueError, match="unknown GMM model"):
        training_settings(PAPER["gmm"], "gan", "reference")
    with pytest.raises(ValueError, match="no network 'wide'"):
        training_settings(PAPER["gmm"], "ours", "wide")


def test_each_model_on_the_reference_network_has_the_notebooks_width() -> None:
    # ndim_tot = 16: the INN pads its output side ([z 2, pad 6, y 8]), ours takes z = 16 - 8;
    # the cINN maps x (2) to z (2) whatever the width.
    widths = {}
    for name in ("ours", "inn_full", "cinn"):
        settings = training_settings(PAPER["gmm"], name, "reference")
        widths[name] = gmm_model(name, settings, "all", seed=0).network.dim
    assert widths == {"ours": 16, "inn_full": 16, "cinn": 2}
    paper = training_settings(PAPER["gmm"], "ours", "paper")
    assert gmm_model("ours", paper, "all", seed=0).network.dim == 10


def test_build_model_is_seeded_and_leaves_global_rng_alone() -> None:
    cfg = tiny_config()
    torch.manual_seed(7)
    before = torch.rand(1)
    torch.manual_seed(7)
    a = gmm_model("inn_full", cfg, "all", seed=3)
    assert torch.equal(torch.rand(1), before)
    b = gmm_model("inn_full", cfg, "all", seed=3)
    c = gmm_model("inn_full", cfg, "all", seed=4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_cinn_predict_is_bayes_rule_over_the_labels(tmp_path: Path) -> None:
    cfg = tiny_config(iterations=1)
    train(tmp_path, "cinn", cfg, labels="some")
    model = load_gmm_model("cinn", tmp_path / "cinn_some_seed0.safetensors", cfg, "some", "cpu")
    x = torch.randn(5, 2)
    scores = model.predict(x)
    gm = GaussianMixture("some")
    assert scores.shape == (5, 8) and torch.isinf(scores[:, gm.n_labels :]).all()
    # independent: log p(x|c_k) + log p(c_k), normalised
    logp = torch.stack(
        [model.log_prob(x, gm.one_hot(torch.tensor(k))) for k in range(gm.n_labels)], 1
    )
    expected = torch.log_softmax(logp + gm.label_prior.log().float(), dim=1)
    torch.testing.assert_close(scores[:, : gm.n_labels], expected, atol=1e-5, rtol=1e-5)


def test_inn_has_no_log_prob_and_ours_has_one(tmp_path: Path) -> None:
    cfg = tiny_config(iterations=1)
    for name in ("ours", "inn_forward_only"):
        train(tmp_path, name, cfg)
    ours = load_gmm_model("ours", tmp_path / "ours_all_seed0.safetensors", cfg, "all", "cpu")
    inn = load_gmm_model(
        "inn_forward_only", tmp_path / "inn_forward_only_all_seed0.safetensors", cfg, "all", "cpu"
    )
    x, c = torch.randn(4, 2), torch.eye(8)[2]
    assert ours.has_log_prob and ours.log_prob(x, c).shape == (4,)
    assert not inn.has_log_prob and inn.log_prob(x, c) is None
    assert inn.sample(c, 6).shape == (6, 2) and inn.predict(x).shape == (4, 8)


# -- training end to end --------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "at_least"), [("ours", 0.6), ("inn_full", 0.3)])
def test_tiny_training_run_beats_chance(tmp_path: Path, name: str, at_least: float) -> None:
    # Seconds on one core; the INN learns slower per iteration, hence its lower bar (chance: 1/8).
    cfg = tiny_config(iterations=150, n_blocks=3, hidden=64)
    status = train(tmp_path, name, cfg)
    assert not status["diverged"] and status["iterations_done"] == 150
    model = load_gmm_model(name, tmp_path / f"{name}_all_seed0.safetensors", cfg, "all", "cpu")
    gm = GaussianMixture("all")
    x, labels = gm.sample(2000, torch.Generator().manual_seed(99))
    accuracy = float((model.predict(x)[:, :8].argmax(1) == labels).float().mean())
    assert accuracy > at_least
    history = (tmp_path / f"{name}_all_seed0_history.csv").read_text().splitlines()
    assert len(history) == 151 and history[0].startswith("iteration,loss")


def test_divergence_is_recorded_not_raised(tmp_path: Path) -> None:
    cfg = tiny_config(iterations=50)
    cfg["ours"]["optimizer"]["lr"] = 1e6
    status = train(tmp_path, "ours", cfg)
    assert status["diverged"] is True
    assert status["iterations_done"] < 50
    assert f"iteration {status['iterations_done']}" in status["message"]
    on_disk = json.loads((tmp_path / "ours_all_seed0.json").read_text())
    assert on_disk["diverged"] is True and on_disk["message"] == status["message"]
    # the last weights are still written, so the evaluation's inputs exist
    assert (tmp_path / "ours_all_seed0.safetensors").exists()
    assert (tmp_path / "ours_all_seed0_history.csv").exists()


def test_same_seed_gives_identical_checkpoints(tmp_path: Path) -> None:
    cfg = tiny_config(iterations=5)
    tensors = []
    for run in ("a", "b", "c"):
        d = tmp_path / run
        d.mkdir()
        train(d, "inn_altered_ramp", cfg, seed=1 if run != "c" else 2)
        tensors.append(
            load_file(str(d / "inn_altered_ramp_all_seed1.safetensors"))
            if run != "c"
            else load_file(str(d / "inn_altered_ramp_all_seed2.safetensors"))
        )
    a, b, c = tensors
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_loading_under_other_settings_fails_naming_both(tmp_path: Path) -> None:
    cfg = tiny_config(iterations=1)
    train(tmp_path, "ours", cfg)
    other = copy.deepcopy(cfg)
    other["ours"]["eps"] = 0.2
    with pytest.raises(CheckpointMismatch, match="0.2"):
        load_gmm_model("ours", tmp_path / "ours_all_seed0.safetensors", other, "all", "cpu")
    # an evaluation-only key does not matter
    other = copy.deepcopy(cfg)
    other["n_test"] = 7
    load_gmm_model("ours", tmp_path / "ours_all_seed0.safetensors", other, "all", "cpu")


# -- configuration checks -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda g: g["inn"]["weights"].update(y=0, z=0), "variants.forward_only.losses"),
        (lambda g: g.update(batch_size=10**7), "gmm.batch_size"),
    ],
)
def test_config_checks_name_the_key(edit, key: str) -> None:
    """Relations between keys; names and ranges are the schema's (tests/test_config.py)."""
    config = copy.deepcopy(PAPER)
    check_config(config)
    edit(config["gmm"])
    with pytest.raises(ConfigError, match=key):
        check_config(config)


# -- resumption -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["ours", "inn_full"])
def test_killed_gmm_training_resumes_to_the_uninterrupted_weights(
    tmp_path: Path, name: str
) -> None:
    from replicate.experiments.gmm.training import RESUME_EVERY

    cfg = tiny_config(iterations=2 * RESUME_EVERY + 10, hidden=8)
    settings = training_settings(cfg, name)

    def run(directory: Path) -> dict:
        directory.mkdir(exist_ok=True)
        return train_gmm_model(
            name,
            settings,
            "all",
            0,
            TrainingFiles(
                directory / "m.safetensors",
                directory / "m.json",
                history=directory / "h.csv",
                resume=directory / "resume.safetensors",
            ),
            progress_every=0,
        )

    run(tmp_path / "whole")
    with killed_after_checkpoints(1):  # SIGKILL right after the first resume checkpoint
        run(tmp_path / "killed")
    assert not (tmp_path / "killed" / "m.json").exists(), "no output before training finished"
    status = run(tmp_path / "killed")

    assert status["resumed_at_iteration"] == RESUME_EVERY
    assert status["iterations_done"] == cfg["iterations"]
    whole = load_file(tmp_path / "whole" / "m.safetensors")
    resumed = load_file(tmp_path / "killed" / "m.safetensors")
    for key, value in whole.items():
        assert torch.equal(value, resumed[key]), key
    assert (tmp_path / "whole" / "h.csv").read_text() == (tmp_path / "killed" / "h.csv").read_text()
    assert not (tmp_path / "killed" / "resume.safetensors").exists()


def test_a_failure_after_the_last_iteration_loses_no_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The status file cannot be written (a full disk, a slow cluster file system): the job
    fails after its last iteration. Its resume state is still there, so the rerun trains no
    iteration and writes what an unfailed run writes; only then is the resume state removed."""
    import replicate.training

    cfg = tiny_config(iterations=30, hidden=8)
    settings = training_settings(cfg, "ours")

    def run(directory: Path) -> dict:
        directory.mkdir(exist_ok=True)
        files = TrainingFiles(
            directory / "m.safetensors",
            directory / "m.json",
            history=directory / "h.csv",
            resume=directory / "resume.safetensors",
        )
        return train_gmm_model("ours", settings, "all", 0, files, progress_every=0)

    whole = run(tmp_path / "whole")
    real_write_json = replicate.training.write_json

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(replicate.training, "write_json", disk_full)
    with pytest.raises(OSError, match="No space left"):
        run(tmp_path / "failed")
    assert (tmp_path / "failed" / "resume.safetensors").exists()
    monkeypatch.setattr(replicate.training, "write_json", real_write_json)
    status = run(tmp_path / "failed")
    assert status["resumed_at_iteration"] == status["iterations_done"] == 30
    assert status["final_terms"] == whole["final_terms"]
    a, b = (load_file(tmp_path / d / "m.safetensors") for d in ("whole", "failed"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "whole" / "h.csv").read_text() == (tmp_path / "failed" / "h.csv").read_text()
    assert not (tmp_path / "failed" / "resume.safetensors").exists()
