"""Flag and config-file validation at the boundary (discrete_rae.validate).

Every bad value must end in exactly one ``error:`` line naming the flag and the problem, exit
code 2, before anything is trained or written. ``train_run`` is replaced by a function that
fails the test, so a value that slips through is caught at once instead of training.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest

from discrete_rae import pipeline
from discrete_rae.catalog import load_all
from discrete_rae.cli import main
from discrete_rae.commands.train import parse_args, run_config_from_args
from discrete_rae.config import (DataConfig, EvalConfig, RunConfig, TrainConfig, choice_names, field_rules,
                                 to_toml)
from discrete_rae.errors import UsageError
from discrete_rae.registry import DOMAINS, LATENTS, MODELS, OBJECTIVES, PRIORS, REGULARIZERS, SAMPLERS
from discrete_rae.runconfig import resolve_run_config
from discrete_rae.validate import COMPONENT_WORDS, validate_run

load_all()


class Trained(AssertionError):
    """Raised by the stand-in for train_run: validation let a bad value through."""


@pytest.fixture(autouse=True)
def no_training(monkeypatch):
    def refuse(*args, **kwargs):
        raise Trained("validation let the run through to training")

    monkeypatch.setattr(pipeline, "train_run", refuse)


def _usage_error(tmp_path: Path, capsys, *extra: str) -> str:
    """Run `train` with ``extra``; assert exit 2, one error line, no traceback, no run directory."""
    runs = tmp_path / "runs"
    code = main(["train", "--domain", "molecules", "--preset", "smoke", "--threads", "1", "--runs-dir", str(runs),
                 "--data-dir", str(tmp_path / "data"), "--device", "cpu", "-q", *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("error:") and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert not runs.exists() or not [p for p in runs.iterdir() if p.name != ".locks"], list(runs.iterdir())
    return err


def _resolve(*argv: str, config: Path | None = None) -> RunConfig:
    """The RunConfig that `train` would resolve from ``argv`` (no training)."""
    argv = ["--preset", "smoke", *argv, *(["--config", str(config)] if config else [])]
    return run_config_from_args(parse_args(argv))


# --- unknown names: one per registry / declared choice list ----------------------------------------
def _sequence_codecs() -> list[str]:
    from discrete_rae.models.sequence import _sequence_codecs as names

    return names()


def _names(module: str, attr: str) -> list[str]:
    import importlib

    return choice_names(getattr(importlib.import_module(module), attr))


UNKNOWN = [  # flags, the error's kind word, the names the error must list
    (["--latent", "foo"], "unknown latent type 'foo'", lambda: LATENTS.names()),
    (["--decoder-reg", "foo"], "unknown decoder regulariser 'foo'", lambda: REGULARIZERS.names()),
    (["--prior", "foo"], "unknown prior 'foo'", lambda: PRIORS.names()),
    (["--objective", "foo"], "unknown objective 'foo'", lambda: OBJECTIVES.names()),
    (["--sampler", "foo"], "unknown sampler 'foo'", lambda: SAMPLERS.names()),
    (["--model", "foo"], "unknown model 'foo'", lambda: MODELS.names()),
    (["--domain", "foo"], "unknown domain 'foo'", lambda: DOMAINS.names()),
    (["--codec", "foo"], "unknown sequence codec 'foo'", _sequence_codecs),
    (["--encoder", "foo"], "unknown sequence encoder 'foo'", lambda: _names("discrete_rae.nn.sequence", "ENCODERS")),
    (["--decoder", "foo"], "unknown sequence decoder 'foo'", lambda: _names("discrete_rae.nn.sequence", "DECODERS")),
    (["--domain", "images", "--likelihood", "foo"], "unknown pixel likelihood 'foo'",
     lambda: _names("discrete_rae.models.images", "PIXEL_LIKELIHOODS")),
    (["--recon-protocol", "foo"], "unknown reconstruction protocol 'foo'", lambda: ["greedy", "stochastic"]),
    (["--categorical-mode", "foo"], "unknown categorical mode 'foo'", lambda: ["argmax", "softmax"]),
    (["--model", "discrete_rae", "--categorical-mode", "foo"], "unknown categorical mode 'foo'",
     lambda: ["argmax", "softmax"]),
    (["--grammar", "foo"], "unknown grammar 'foo'", lambda: _names("discrete_rae.grammar", "builtin_names")),
]


@pytest.mark.parametrize("extra,needle,names", UNKNOWN, ids=[" ".join(u[0]) for u in UNKNOWN])
def test_unknown_name_is_one_error_listing_the_choices(tmp_path, capsys, extra, needle, names):
    err = _usage_error(tmp_path, capsys, *extra)
    assert needle in err, err
    listed = names()
    assert listed and all(name in err for name in listed), (listed, err)


# --- settings the chosen components do not use --------------------------------------------------
INAPPLICABLE = [  # flags, what the error must say
    (["--model", "grammar_vae", "--tau", "0.5"], "--tau does not apply to the gaussian latent of grammar_vae"),
    (["--model", "discrete_rae", "--latent-dim", "8"], "--latent-dim does not apply to the categorical latent"),
    (["--model", "grammar_rae", "--straight-through", "true"], "the deterministic latent of grammar_rae"),
    (["--model", "gumbel_vae", "--categorical-mode", "softmax"], "the gumbel latent of gumbel_vae"),
    (["--model", "grammar_rae_sn", "--reg-weight", "0.1"], "the sn decoder regulariser of grammar_rae_sn"),
    (["--model", "discrete_rae", "--gmm-k", "3"], "--gmm-k does not apply to the categorical latent"),
    (["--model", "char_rae", "--grammar", "smiles"], "--grammar does not apply to the char codec of char_rae"),
    (["--model", "char_rae", "--length-mask", "false"], "--length-mask does not apply to the char codec"),
    (["--domain", "expressions", "--ring-mask", "false"], "--ring-mask does not apply to the expressions domain"),
    (["--domain", "expressions", "--column", "smiles"], "--column does not apply to the expressions domain"),
    (["--domain", "images", "--temperature", "0.5"], "--temperature does not apply to the images domain"),
    (["--domain", "images", "--recon-protocol", "stochastic"], "--recon-protocol does not apply to the images"),
    (["--encoder", "gru", "--conv-channels", "4,4"], "--conv-channels does not apply to the gru encoder"),
    (["--decoder", "repeat", "--word-dropout", "0.1"], "--word-dropout does not apply to the repeat decoder"),
    (["--encoder", "conv", "--decoder", "repeat", "--embed-dim", "8"],
     "--embed-dim does not apply to the conv encoder and the repeat decoder of grammar_rae"),
    (["--domain", "images", "--likelihood", "bernoulli", "--pixel-sigma", "0.2"],
     "--pixel-sigma does not apply to the bernoulli likelihood"),
    (["--model", "grammar_rae", "--disc-hidden", "64"], "--disc-hidden does not apply to the penalized objective"),
    (["--model", "aae", "--adv-sigma", "2"], "--adv-sigma does not apply to the aae objective of aae"),
    (["--model", "grammar_rae", "--iw-k", "3"], "--iw-k does not apply to the penalized objective of grammar_rae"),
    (["--model", "vae", "--mmd-weight", "5"], "--mmd-weight does not apply to the penalized objective of vae"),
    (["--model", "iwae", "--mae-eta", "2"], "--mae-eta does not apply to the iwae objective of iwae"),
    (["--model", "wae_mmd", "--info-lambda", "10"], "(only to objective info_vae)"),
]


@pytest.mark.parametrize("extra,needle", INAPPLICABLE, ids=[" ".join(i[0]) for i in INAPPLICABLE])
def test_setting_a_field_the_run_does_not_use_is_an_error(tmp_path, capsys, extra, needle):
    assert needle in _usage_error(tmp_path, capsys, *extra)


def test_preset_values_for_unused_fields_are_not_errors():
    # the smoke preset sets latent_dim and kl_anneal_steps, which a categorical latent ignores
    run = _resolve("--model", "discrete_rae", "--domain", "expressions")
    assert run.model.latent == "categorical" and run.explicit["model"] == {}


def test_config_file_key_for_an_unused_field_names_the_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[model]\ntau = 0.3\n")
    with pytest.raises(UsageError, match=r"\[model\] tau in .*c\.toml does not apply to the gaussian latent"):
        _resolve("--model", "grammar_vae", config=path)


def test_saved_config_toml_can_be_passed_back(tmp_path):
    """A run's config.toml lists every key; keys that change nothing are not 'set by the user'."""
    run = _resolve("--model", "grammar_vae", "--domain", "expressions", "--lr", "0.002")
    path = tmp_path / "config.toml"
    path.write_text(to_toml(run.sections()))
    again = _resolve("--model", "grammar_vae", "--domain", "expressions", config=path)
    assert again.sections() == run.sections()


def test_a_prior_that_does_not_fit_the_latent_is_one_error(tmp_path, capsys):
    err = _usage_error(tmp_path, capsys, "--model", "grammar_vae", "--prior", "uniform_categorical")
    assert "continuous" in err and "standard_normal" in err, err


def test_latent_that_the_default_sampler_cannot_fit_is_caught_before_training(tmp_path, capsys):
    err = _usage_error(tmp_path, capsys, "--latent", "gumbel")
    assert "default sampler 'gmm'" in err and "--sampler" in err and "cat_mixture" in err
    switched = _resolve("--latent", "gumbel", "--sampler", "cat_mixture").model
    assert switched.latent == "gumbel" and switched.prior == "uniform_categorical"  # the prior follows


# --- numbers ------------------------------------------------------------------------------------
NUMERIC = [  # flags, the flag the error must name, what it must say
    (["--latent-dim", "0"], "--latent-dim", "positive"),
    (["--max-length", "-1"], "--max-length", ">= 0"),
    (["--dec-hidden", "0"], "--dec-hidden", "positive"),
    (["--enc-hidden", "0"], "--enc-hidden", "positive"),
    (["--seed", "-1"], "--seed", "in [0, 4294967295]"),
    (["--lr", "nan"], "--lr", "finite"),
    (["--lr", "inf"], "--lr", "finite"),
    (["--lr", "0"], "--lr", "positive"),
    (["--lr-factor", "2"], "--lr-factor", "in (0, 1)"),
    (["--gmm-k", "0"], "--gmm-k", "positive"),
    (["--n-samples", "0"], "--n-samples", "positive"),
    (["--temperature", "nan"], "--temperature", "finite"),
    (["--beta", "nan"], "--beta", "finite"),
    (["--beta", "-1"], "--beta", ">= 0"),
    (["--max-minutes", "nan"], "--max-minutes", "finite"),
    (["--max-minutes", "-1"], "--max-minutes", ">= 0"),
    (["--grad-clip", "nan"], "--grad-clip", "finite"),
    (["--epochs", "0"], "--epochs", "positive"),
    (["--val-fraction", "0.5"], "--val-fraction", "in (0, 0.5)"),
    (["--word-dropout", "1"], "--word-dropout", "in [0, 1)"),
    (["--conv-channels", "4,0"], "--conv-channels", "positive"),
    (["--conv-channels", "4,4,4"], "--conv-channels", "--conv-kernels"),
    (["--model", "discrete_rae", "--n-classes", "1"], "--n-classes", ">= 2"),
    (["--model", "discrete_rae", "--tau", "0"], "--tau", "positive"),
    (["--domain", "images", "--pixel-sigma", "0"], "--pixel-sigma", "positive"),
    (["--domain", "images", "--channels", "8,-1"], "--channels", "positive"),
    (["--n-test", "-5"], "--n-test", ">= 0"),
]


@pytest.mark.parametrize("extra,flag,needle", NUMERIC, ids=[" ".join(n[0]) for n in NUMERIC])
def test_bad_number_is_one_error_before_any_work(tmp_path, capsys, extra, flag, needle):
    err = _usage_error(tmp_path, capsys, *extra)
    assert flag in err and needle in err, err


def test_bad_number_in_a_config_file_names_the_key(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[train]\nlr = nan\n")
    with pytest.raises(UsageError, match=r"\[train\] lr in .*c\.toml must be a finite number"):
        _resolve(config=path)


@pytest.mark.parametrize("text,needle", [("[model]\nlatent_dim = 1.5\n", "bad value 1.5"),
                                         ("[train]\nlr = true\n", "bad value True"),
                                         ("model = 3\n", "[model] must be a table")])
def test_config_file_values_of_the_wrong_type(tmp_path, capsys, text, needle):
    path = tmp_path / "c.toml"
    path.write_text(text)
    assert needle in _usage_error(tmp_path, capsys, "--config", str(path))


def test_validate_run_checks_configs_built_in_code():
    run = _resolve()
    with pytest.raises(UsageError, match="unknown sequence encoder 'foo'"):
        validate_run(dataclasses.replace(run, model=dataclasses.replace(run.model, encoder="foo")))
    with pytest.raises(UsageError, match="--batch-size must be positive"):
        validate_run(dataclasses.replace(run, train=dataclasses.replace(run.train, batch_size=0)))


def test_bf16_on_cpu_is_an_error(tmp_path, capsys):
    assert "--precision bf16 needs a CUDA device" in _usage_error(tmp_path, capsys, "--precision", "bf16")


# --- every field declares its rules -------------------------------------------------------------
def _config_classes() -> list[type]:
    classes = {TrainConfig, DataConfig, EvalConfig}
    for _, spec in MODELS.items():
        for domain in spec.domains:
            classes.add(type(spec.config_for(domain)))
    return sorted(classes, key=lambda c: c.__name__)


def _numeric(typ: object) -> bool:
    args = typing.get_args(typ)
    return typ in (int, float) or bool(args) and all(a in (int, float, Ellipsis) for a in args)


@pytest.mark.parametrize("cls", _config_classes(), ids=lambda c: c.__name__)
def test_every_field_declares_help_and_every_number_a_range(cls):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        rules = field_rules(cls, f.name)
        assert rules.get("help"), f"{cls.__name__}.{f.name} has no help"
        if _numeric(hints[f.name]):
            assert {"ge", "gt", "le", "lt"} & set(rules), f"{cls.__name__}.{f.name} declares no range"
        if "choices" in rules:
            assert choice_names(rules["choices"]), f"{cls.__name__}.{f.name}: empty choice list"


@pytest.mark.parametrize("cls", _config_classes(), ids=lambda c: c.__name__)
def test_applies_rules_name_real_components_and_choices(cls):
    """A misspelt latent name in an ``applies`` rule would silently forbid a flag."""
    model_classes = [c for c in _config_classes() if c not in (TrainConfig, DataConfig, EvalConfig)]
    for f in dataclasses.fields(cls):
        applies = field_rules(cls, f.name).get("applies")
        for alt in (applies if isinstance(applies, tuple) else (applies,)) if applies else ():
            for component, names in alt.items():
                assert component in COMPONENT_WORDS, (f.name, component)
                if component == "domain":
                    known = set(DOMAINS.names())
                else:
                    known = {n for c in model_classes if component in {g.name for g in dataclasses.fields(c)}
                             for n in choice_names(field_rules(c, component)["choices"])}
                assert set(names) <= known, (cls.__name__, f.name, set(names) - known)


@pytest.mark.parametrize("preset", ["smoke", "quick", "paper"])
def test_every_registered_model_and_preset_passes_validation(preset):
    for name, spec in MODELS.items():
        for domain in spec.domains:
            validate_run(_resolve("--model", name, "--domain", domain, "--preset", preset))


def test_the_gpu_preset_resolves_for_the_molecule_models():
    for name in ("grammar_rae", "grammar_vae", "rae_l2", "gumbel_vae"):
        run = _resolve("--model", name, "--domain", "molecules", "--preset", "gpu")
        assert run.data.dataset == "zinc250k" and run.train.max_steps == 78_000 and run.model.dec_layers == 3


def test_plain_data_resolves_without_a_parser():
    """compare / image-table resolve from plain data; the resolution must not need the parser."""
    run = resolve_run_config("expressions", "grammar_rae", "smoke", None, {"train": {"lr": "0.01"}})
    assert run.train.lr == 0.01 and run.explicit["train"] == {"lr": "--lr"}


def test_evaluate_checks_the_reconstruction_protocol_before_loading(tmp_path, capsys):
    code = main(["evaluate", "--run", str(tmp_path / "nowhere"), "--recon-protocol", "foo", "-q"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "--recon-protocol: unknown reconstruction protocol 'foo'; choose one of: greedy, stochastic" in err


@pytest.mark.parametrize("extra,needle", [
    (["--domain", "images", "--encoder", "gru"], "unrecognized arguments: --encoder gru"),
    (["--lr"], "argument --lr: expected one argument"),
])
def test_argparse_mistakes_are_one_error_line(tmp_path, capsys, extra, needle):
    err = _usage_error(tmp_path, capsys, *extra)
    assert needle in err and "train.py --help" in err
