"""Typed configs: YAML + command-line overrides, unknown keys, types, choices."""
from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from bertkit.config import from_dict, help_text, option, parse_args, required, save
from bertkit.errors import BertkitError


@dataclass
class Optim:
    lr: float = option(5e-5, "peak learning rate")
    warmup: float = option(0.1, "share of steps spent warming up")


@dataclass
class Run:
    model: str = required("model directory")
    pooling: str = option("mean", "pooling", choices=("cls", "mean", "max"))
    batch_size: int = option(32, "batch size")
    normalize: bool = option(False, "L2-normalise")
    seeds: list[int] = option([1], "seeds")
    optim: Optim = field(default_factory=Optim)


def test_flags_both_spellings_nested_and_booleans():
    cfg = parse_args(Run, ["--model", "m", "--batch-size=8", "--optim.lr=3e-5", "--normalize",
                           "--seeds", "1,2,3"], prog="t")
    assert (cfg.model, cfg.batch_size, cfg.optim.lr, cfg.normalize, cfg.seeds) == ("m", 8, 3e-5, True, [1, 2, 3])
    assert cfg.optim.warmup == 0.1
    assert parse_args(Run, ["--model=m", "--no-normalize"], prog="t").normalize is False


def test_yaml_then_flags_win(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model: from-yaml\nbatch_size: 16\noptim:\n  lr: 0.001\n  warmup: 0.2\n")
    cfg = parse_args(Run, ["--config", str(path), "--optim.lr=2e-5"], prog="t")
    assert (cfg.model, cfg.batch_size, cfg.optim.lr, cfg.optim.warmup) == ("from-yaml", 16, 2e-5, 0.2)


def test_unknown_keys_get_the_closest_valid_key(tmp_path):
    with pytest.raises(BertkitError, match=r"unknown key `optim.lrr`.*did you mean `lr`"):
        parse_args(Run, ["--model=m", "--optim.lrr=1"], prog="t")
    with pytest.raises(BertkitError, match=r"unknown key `batchsize`.*did you mean `batch_size`"):
        from_dict(Run, {"model": "m", "batchsize": 3}, source="run.yaml")


def test_types_choices_and_required():
    with pytest.raises(BertkitError, match="`batch_size` must be an integer, got 'eight'"):
        parse_args(Run, ["--model=m", "--batch-size=eight"], prog="t")
    with pytest.raises(BertkitError, match="`pooling` is 'maen'.*did you mean `mean`"):
        parse_args(Run, ["--model=m", "--pooling=maen"], prog="t")
    with pytest.raises(BertkitError, match="`--model` is required"):
        parse_args(Run, [], prog="t")
    with pytest.raises(BertkitError, match="needs a value"):
        parse_args(Run, ["--model"], prog="t")


def test_resolved_config_round_trips_through_yaml(tmp_path):
    cfg = parse_args(Run, ["--model=m", "--optim.lr=1e-4"], prog="t")
    save(cfg, tmp_path / "config.yaml")
    again = parse_args(Run, ["--config", str(tmp_path / "config.yaml")], prog="t")
    assert again == cfg


def test_help_lists_every_option():
    text = help_text(Run, "bertkit x")
    for flag in ("--model", "--batch-size", "--optim.lr", "one of cls, mean, max"):
        assert flag in text


@pytest.mark.parametrize("verb", ["finetune", "pretrain", "encode", "serve", "export", "convert", "pretrain-data"])
def test_every_flag_in_help_is_accepted_as_printed(verb, capsys):
    """Nested keys are printed with dashes (`--config-overrides.hidden-size`), and each flag printed is
    one the parser takes (a wrong value type is fine here; an unknown key is not)."""
    from bertkit.cli.main import main as cli

    with pytest.raises(SystemExit):
        cli([verb, "--help"])
    text = capsys.readouterr().out
    flags = [line.split()[0] for line in text.splitlines() if line.startswith("  --")]
    assert len(flags) >= 3 and not [f for f in flags if "_" in f]
    for flag in flags:
        cli([verb, f"{flag}=@"])
        err = capsys.readouterr().err
        assert "unknown key" not in err and "unrecognized" not in err, (flag, err)
