"""The AAE's label variants (aae_supervised, aae_semi, aae_cluster): batches with labels, what each
phase moves, the labelled subset, the label grid, held-out figures and the refusals."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from discrete_rae.cli import main
from discrete_rae.config import replace
from discrete_rae.errors import ConfigError, DataError, UsageError
from discrete_rae.labels import (cluster_error, decode_with_labels, label_grid, label_metrics, labelled_subset,
                                 training_data)
from discrete_rae.objectives_labels import LabelNormal
from discrete_rae.registry import MODELS
from discrete_rae.runconfig import resolve_run_config
from discrete_rae.trainer import Trainer, n_examples, take

ROWS = ("aae_supervised", "aae_semi", "aae_cluster")
PHASES = {"aae_supervised": ["main", "discriminator", "generator"],
          "aae_semi": ["main", "discriminator", "generator", "supervised"],
          "aae_cluster": ["main", "discriminator", "generator"]}
CPU = torch.device("cpu")


def _model(prepared_for, name: str):
    run, prepared = prepared_for("images", name)
    torch.manual_seed(0)
    return run, prepared, MODELS.get(name).build(run.model, prepared.codec)


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def _changed(module: torch.nn.Module, before: dict[str, torch.Tensor]) -> bool:
    return any(not torch.equal(v, before[k]) for k, v in module.named_parameters())


def _discriminators(model) -> list[torch.nn.Module]:
    obj = model.objective
    return [obj.discriminator] + ([obj.category_discriminator] if obj.category_game else [])


@pytest.mark.parametrize("name", ROWS)
def test_each_row_trains_and_every_optimizer_moves_its_parameters(prepared_for, name):
    run, prepared, model = _model(prepared_for, name)
    assert [p.name for p in model.phases()] == PHASES[name]
    train, val = training_data(model, prepared, run.train.seed, run.model.labels_per_class, name)
    cfg = replace(run.train, {"epochs": 1, "max_steps": 3, "early_stop": 0})
    trainer = Trainer(model, cfg, None, CPU, progress=False)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    state = trainer.fit(train, val)
    assert state.step == 3
    for opt_name, opt in trainer.optimizers.items():
        params = [p for g in opt.param_groups for p in g["params"]]
        moved = [p for n, p in model.named_parameters() if any(p is q for q in params) and not torch.equal(p, before[n])]
        assert moved, f"optimizer {opt_name} moved none of its parameters"
    logged = trainer.state.history[-1]["train"]
    assert "discriminator/loss" in logged and "generator/adv" in logged
    assert ("discriminator/acc_y" in logged) == (name != "aae_supervised")
    assert ("supervised/ce" in logged) == (name == "aae_semi")


@pytest.mark.parametrize("name", ROWS)
def test_discriminator_phases_never_move_the_encoder_and_generator_phases_never_move_discriminators(prepared_for,
                                                                                                  name):
    run, prepared, model = _model(prepared_for, name)
    train, _ = training_data(model, prepared, run.train.seed, run.model.labels_per_class, name)
    batch = take(train, torch.arange(32))
    trainer = Trainer(model, run.train, None, CPU, progress=False)
    parts = {"encoder": model.encoder, "latent": model.latent, "decoder": model.decoder,
             **{f"disc{i}": d for i, d in enumerate(_discriminators(model))}}
    discs = {n for n in parts if n.startswith("disc")}
    model.train()
    for phase in trainer.phases:
        before = {n: _snapshot(m) for n, m in parts.items()}
        trainer._optimizer_step(phase.loss(batch, 0), phase.optimizer)
        moved = {n for n, m in parts.items() if _changed(m, before[n])}
        if phase.name == "discriminator":
            assert moved == discs
        elif phase.name in ("generator", "supervised"):
            assert moved == {"encoder", "latent"}
        else:
            assert moved == {"encoder", "latent", "decoder"}


def test_the_labelled_subset_is_stratified_and_seeded():
    labels = torch.arange(10).repeat_interleave(40)[torch.randperm(400, generator=torch.Generator().manual_seed(0))]
    subset = labelled_subset(labels, 10, seed=3)
    assert len(subset) == 100 and len(set(subset.tolist())) == 100
    assert torch.equal(torch.bincount(labels[subset], minlength=10), torch.full((10,), 10))
    assert torch.equal(subset, labelled_subset(labels, 10, seed=3))
    assert not torch.equal(subset, labelled_subset(labels, 10, seed=4))
    with pytest.raises(DataError, match="fewer than --labels-per-class 41"):
        labelled_subset(labels, 41, seed=3)


def test_semi_supervised_batches_pair_every_row_with_a_labelled_example(prepared_for):
    run, prepared, model = _model(prepared_for, "aae_semi")
    y = prepared.labels["class"]
    train, val = training_data(model, prepared, 0, 2, "aae_semi")
    x, x_l, y_l = train
    assert n_examples(train) == len(prepared.train) and torch.equal(x, prepared.train) and val is prepared.val
    subset = labelled_subset(y, 2, 0)
    rows = {tuple(prepared.train[i].flatten().tolist()): int(y[i]) for i in subset.tolist()}
    assert {tuple(r.flatten().tolist()) for r in x_l} == set(rows)  # only, and every, labelled example
    assert all(rows[tuple(a.flatten().tolist())] == int(b) for a, b in zip(x_l[:50], y_l[:50]))


def test_tuple_data_trains_exactly_like_the_plain_tensor(prepared_for):
    """The trainer batches a tuple row by row like one tensor: a 1-tuple gives the same weights."""
    run, prepared, _ = _model(prepared_for, "rae")
    cfg = replace(run.train, {"epochs": 2, "early_stop": 0})
    results = []
    for wrap in (False, True):
        torch.manual_seed(0)
        model = MODELS.get("rae").build(run.model, prepared.codec)
        if wrap:
            loss = model.loss
            model.loss = lambda batch, step=0: loss(batch[0], step)
        data = ((prepared.train,), (prepared.val,)) if wrap else (prepared.train, prepared.val)
        trainer = Trainer(model, cfg, None, CPU, progress=False)
        trainer.fit(*data)
        results.append((model.state_dict(), trainer.state.history))
    (w0, h0), (w1, h1) = results
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    assert [r["train"] for r in h0] == [r["train"] for r in h1]
    with pytest.raises(ValueError, match="same number of rows"):
        Trainer(model, cfg, None, CPU, progress=False).fit((prepared.train, prepared.val), prepared.val)


def test_the_label_grid_has_one_column_per_label(prepared_for):
    _, prepared, model = _model(prepared_for, "aae_supervised")
    model.eval()
    k, d = model.latent.n_labels, model.latent.style_dim
    styles = torch.randn(3, d, generator=torch.Generator().manual_seed(0))
    images = decode_with_labels(model, styles, CPU)
    assert images.shape[:2] == (3, k)
    code = torch.cat([torch.nn.functional.one_hot(torch.tensor([4]), k).float(), styles[1:2]], -1)
    assert torch.allclose(images[1, 4], model.generate(code)[0])  # row = style, column = label
    _, _, h, w = prepared.train.shape
    grid = label_grid(model, styles, CPU)
    assert grid.shape[:2] == (3 * (h + 1) + 1, k * (w + 1) + 1)


def test_label_normal_prior_draws_one_hot_labels_with_normal_styles():
    prior = LabelNormal(4, 3)
    g = torch.Generator().manual_seed(0)
    c = prior.sample(20_000, g)
    assert c.shape == (20_000, 7) and torch.equal(c[:, :4].sum(-1), torch.ones(20_000))
    assert torch.allclose(c[:, :4].mean(0), torch.full((4,), 0.25), atol=0.02)
    assert abs(float(c[:, 4:].std()) - 1) < 0.02
    expected = -torch.log(torch.tensor(4.0)) + torch.distributions.Normal(0, 1).log_prob(c[:5, 4:]).sum(-1)
    assert torch.allclose(prior.log_prob(c[:5]), expected, atol=1e-5)


def test_cluster_error_names_clusters_by_their_majority_training_label():
    train_c, train_y = torch.tensor([0, 0, 0, 0, 1, 1, 2]), torch.tensor([5, 5, 1, 5, 2, 2, 7])
    test_c, test_y = torch.tensor([0, 1, 2, 3]), torch.tensor([5, 3, 7, 5])
    error, used = cluster_error(train_c, train_y, test_c, test_y, k=4)
    # cluster 3 has no training member: it takes the overall majority label (5)
    assert error == pytest.approx(0.25) and used == 3


def test_held_out_figures_of_the_semi_supervised_and_clustering_rows(prepared_for, tmp_path):
    _, prepared, semi = _model(prepared_for, "aae_semi")
    metrics = label_metrics(semi, prepared, CPU, tmp_path)
    assert set(metrics) == {"head_accuracy"} and 0.0 <= metrics["head_accuracy"] <= 1.0
    assert (tmp_path / "label_grid.png").is_file()
    _, prepared, clusters = _model(prepared_for, "aae_cluster")
    metrics = label_metrics(clusters, prepared, CPU)
    assert set(metrics) == {"cluster_error", "clusters_used"} and 1 <= metrics["clusters_used"] <= 16
    _, prepared, vae = _model(prepared_for, "vae")
    assert label_metrics(vae, prepared, CPU) == {}


def test_label_rows_refuse_what_they_cannot_use(prepared_for):
    run, prepared, model = _model(prepared_for, "aae_semi")
    unlabelled = SimpleNamespace(**{**vars(prepared), "labels": {}})
    with pytest.raises(ConfigError, match="reads class labels"):
        training_data(model, unlabelled, 0, 10, "aae_semi")
    with pytest.raises((ConfigError, UsageError), match="labels-per-class"):
        resolve_run_config("images", "aae_supervised", "smoke", None, {"model": {"labels_per_class": 5}})
    with pytest.raises((ConfigError, UsageError), match="label-classes"):
        resolve_run_config("images", "rae", "smoke", None, {"model": {"label_classes": 5}})
    with pytest.raises((ConfigError, UsageError), match="molecules"):
        resolve_run_config("molecules", "aae_cluster", "smoke", None, {})
    with pytest.raises(ConfigError, match="needs --latent style_category"):
        MODELS.get("aae_semi").build(replace(run.model, {"latent": "style_label"}), prepared.codec)
    small = replace(run.model, {"label_classes": 3})
    with pytest.raises(ConfigError, match="--label-classes is 3"):
        training_data(MODELS.get("aae_semi").build(small, prepared.codec), prepared, 0, 10, "aae_semi")


def test_cli_run_reports_the_label_swap_accuracy_and_draws_the_grid(tmp_path):
    assert main(["train", "--domain", "images", "--model", "aae_supervised", "--preset", "smoke", "--runs-dir",
                 str(tmp_path), "--run-name", "s", "--data-dir", str(tmp_path / "data"), "--threads", "1",
                 "--max-steps", "3", "-q"]) == 0
    metrics = json.loads((tmp_path / "s" / "metrics.json").read_text())
    assert 0.0 <= metrics["label_swap_accuracy"] <= 1.0 and 0.0 <= metrics["head_accuracy"] <= 1.0
    assert (tmp_path / "s" / "label_grid.png").is_file()


def test_batch_mutual_information_bounds() -> None:
    import math

    from discrete_rae.objectives_labels import batch_mutual_information

    k = 4
    confident_balanced = torch.eye(k).repeat(3, 1)  # every category used equally, each y one-hot
    assert float(batch_mutual_information(confident_balanced)) == pytest.approx(math.log(k), abs=1e-4)
    collapsed = torch.zeros(12, k)
    collapsed[:, 1] = 1.0  # one category for every example: no information about x
    assert float(batch_mutual_information(collapsed)) == pytest.approx(0.0, abs=1e-4)
    uncertain = torch.full((12, k), 1.0 / k)  # balanced on average but no example is assigned
    assert float(batch_mutual_information(uncertain)) == pytest.approx(0.0, abs=1e-4)


def test_the_mutual_information_term_enters_the_clustering_loss_only_when_asked(prepared_for):
    run, prepared, _ = _model(prepared_for, "aae_cluster")
    assert run.model.cluster_mi_weight == 1000.0  # the row's default (README: measured)
    torch.manual_seed(0)
    model = MODELS.get("aae_cluster").build(replace(run.model, {"cluster_mi_weight": 0.0}), prepared.codec)
    x = prepared.train[:16]
    plain = model.objective.main_terms(model, x, 0)
    assert "neg_mi" not in plain
    weighted = MODELS.get("aae_cluster").build(replace(run.model, {"cluster_mi_weight": 5.0}), prepared.codec)
    weighted.load_state_dict(model.state_dict())
    terms = weighted.objective.main_terms(weighted, x, 0)
    assert float(terms["neg_mi"]) < 0  # -w * I with I > 0 on a fresh head
    total = float(plain["loss"].detach()) + float(terms["neg_mi"])
    assert float(terms["loss"].detach()) == pytest.approx(total, rel=1e-5)
    with pytest.raises((ConfigError, UsageError), match="cluster-mi-weight"):
        resolve_run_config("images", "aae_supervised", "smoke", None, {"model": {"cluster_mi_weight": 1.0}})


def test_shifted_moves_whole_pixels_within_the_bound_and_adds_noise_only_when_asked() -> None:
    from discrete_rae.objectives_labels import shifted

    x = torch.zeros(64, 1, 9, 9)
    x[:, :, 4, 4] = 1.0
    torch.manual_seed(0)
    moved = shifted(x, 2, 0.0)
    where = [(m[0] == 1).nonzero().tolist() for m in moved]
    assert all(len(w) == 1 for w in where) and torch.allclose(moved.sum((1, 2, 3)), torch.ones(64))
    offsets = {(w[0][0] - 4, w[0][1] - 4) for w in where}
    assert all(max(abs(a), abs(b)) <= 2 for a, b in offsets) and len(offsets) > 5  # random, within +-2
    assert torch.equal(shifted(x, 0, 0.0), x)
    noisy = shifted(x, 0, 0.1)
    assert 0.05 < float((noisy - x).std()) < 0.2


def test_consistency_kl_is_zero_on_agreement_and_the_kl_otherwise() -> None:
    import math

    from discrete_rae.objectives_labels import consistency_kl

    clean = torch.tensor([[0.0, 0.0]])
    assert float(consistency_kl(clean, clean)) == pytest.approx(0.0, abs=1e-7)
    other = torch.tensor([[math.log(3.0), 0.0]], requires_grad=True)  # p' = (0.75, 0.25)
    expected = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    clean = clean.clone().requires_grad_(True)
    kl = consistency_kl(clean, other)
    assert float(kl.detach()) == pytest.approx(expected, rel=1e-6)
    kl.backward()
    assert clean.grad is None and other.grad is not None  # the clean prediction is the fixed target


def test_relaxed_category_draws_replace_the_one_hots_only_when_asked(prepared_for) -> None:
    from discrete_rae.objectives_labels import relaxed_one_hots

    torch.manual_seed(0)
    y = relaxed_one_hots(2000, 10, 0.5, torch.zeros(1))
    assert y.shape == (2000, 10) and torch.allclose(y.sum(-1), torch.ones(2000), atol=1e-5)
    assert 0.4 < float(y.max(-1).values.mean()) < 0.99  # soft, not one-hots
    counts = torch.bincount(y.argmax(-1), minlength=10).float()
    assert float(counts.min()) > 120  # uniform over the categories (200 expected each)
    sharp = relaxed_one_hots(2000, 10, 0.01, torch.zeros(1))
    assert float(sharp.max(-1).values.mean()) > 0.99
    run, prepared, model = _model(prepared_for, "aae_semi")
    prior = model.prior.sample(8)
    assert torch.equal(model.objective.category_draws(prior), prior[:, :10])  # the paper: the one-hots
    relaxed = MODELS.get("aae_semi").build(replace(run.model, {"category_prior_tau": 0.5}), prepared.codec)
    soft = relaxed.objective.category_draws(prior)
    assert soft.shape == (8, 10) and not torch.equal(soft, prior[:, :10])
    with pytest.raises((ConfigError, UsageError), match="category-prior-tau"):
        resolve_run_config("images", "aae", "smoke", None, {"model": {"category_prior_tau": 0.5}})


def test_the_consistency_term_enters_the_main_loss_only_when_asked(prepared_for) -> None:
    run, prepared, _ = _model(prepared_for, "aae_semi")
    assert (run.model.consistency_weight, run.model.cluster_mi_weight) == (1000.0, 1000.0)  # the row's (README)
    torch.manual_seed(0)
    plain = MODELS.get("aae_semi").build(replace(run.model, {"consistency_weight": 0.0}), prepared.codec)
    x = prepared.train[:16]
    torch.manual_seed(1)
    base = plain.objective.main_terms(plain, x, 0)
    assert "consistency" not in base

    def terms(**options):
        model = MODELS.get("aae_semi").build(replace(run.model, options), prepared.codec)
        model.load_state_dict(plain.state_dict())
        torch.manual_seed(1)
        return model.objective.main_terms(model, x, 0)

    same = terms(consistency_weight=3.0, consistency_shift=0, consistency_noise=0.0)  # x' = x: KL 0
    assert float(same["consistency"]) == pytest.approx(0.0, abs=1e-6)
    on = terms(consistency_weight=3.0, consistency_shift=2, consistency_noise=0.1)
    assert float(on["consistency"]) > 0
    total = float(base["loss"].detach()) + float(on["consistency"])
    assert float(on["loss"].detach()) == pytest.approx(total, rel=1e-5)
    model = MODELS.get("aae_semi").build(replace(run.model, {"consistency_weight": 3.0}), prepared.codec)
    assert "consistency" not in model.eval().objective.main_terms(model, x, 0)  # validation: deterministic
    with pytest.raises((ConfigError, UsageError), match="consistency-weight"):
        resolve_run_config("images", "aae_supervised", "smoke", None, {"model": {"consistency_weight": 1.0}})
