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
    cfg = parse_args(
        Run, ["--model", "m", "--batch-size=8", "--optim.lr=3e-5", "--normalize", "--seeds", "1,2,3"], prog="t"
    )
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

    try:
        cli([verb, "--help"])
    except SystemExit:  # most verbs print their help and exit; serve adds a note and returns
        pass
    text = capsys.readouterr().out
    flags = [line.split()[0] for line in text.splitlines() if line.startswith("  --")]
    assert len(flags) >= 3 and not [f for f in flags if "_" in f]
    for flag in flags:
        cli([verb, f"{flag}=@"])
        err = capsys.readouterr().err
        assert "unknown key" not in err and "unrecognized" not in err, (flag, err)


# --- Ranges: option(at_least=, above=, at_most=, below=) --------------------------------------------
@dataclass
class Ranged:
    steps: int = option(1, "steps", at_least=1)
    lr: float = option(0.1, "learning rate", above=0)
    share: float = option(0.5, "share", at_least=0, at_most=1)
    dropout: float = option(0.0, "dropout", at_least=0, below=1)
    limit: int | None = option(None, "optional limit", at_least=1)
    seeds: list[int] = option([], "seeds", at_least=0)
    offset: float = option(0.0, "no range: any number")


@dataclass
class BoundedOptim:
    lr: float = option(5e-5, "peak learning rate", above=0)
    warmup_steps: int = option(0, "warm-up steps", at_least=0)


@dataclass
class RangedOptim:
    optim: BoundedOptim = field(default_factory=BoundedOptim)


@pytest.mark.parametrize(
    "flag, value, parsed",
    [
        ("steps", "1", 1),
        ("lr", "1e-300", 1e-300),
        ("share", "0", 0.0),
        ("share", "1", 1.0),
        ("dropout", "0", 0.0),
        ("dropout", "0.999", 0.999),
        ("limit", "1", 1),
        ("seeds", "0,5", [0, 5]),
        ("offset", "-1e9", -1e9),
    ],
)
def test_values_on_the_edge_of_a_range_are_taken(flag, value, parsed):
    assert getattr(parse_args(Ranged, [f"--{flag}", value], prog="t"), flag) == parsed


@pytest.mark.parametrize(
    "flag, value, shown, bound",
    [
        ("steps", "0", "0", ">= 1"),  # inclusive bound: one below it
        ("steps", "-5", "-5", ">= 1"),
        ("lr", "0", "0.0", "> 0"),  # exclusive bound: the bound itself
        ("lr", "-1", "-1.0", "> 0"),
        ("share", "1.0001", "1.0001", ">= 0 and <= 1"),
        ("share", "-0.0001", "-0.0001", ">= 0 and <= 1"),
        ("dropout", "1", "1.0", ">= 0 and < 1"),
        ("limit", "0", "0", ">= 1"),  # an optional number is checked once given
        ("seeds", "1,-2,3", "-2", ">= 0"),  # a list item by item: the bad item is named
        # NaN and infinity pass every comparison or none, so they are refused wherever a range is set
        ("lr", "nan", "nan", "> 0"),
        ("lr", "inf", "inf", "> 0"),
        ("share", "-inf", "-inf", ">= 0 and <= 1"),
        ("lr", "1e400", "inf", "> 0"),  # overflows to infinity
    ],
)
def test_values_outside_a_range_name_the_flag_the_value_and_the_range(flag, value, shown, bound):
    with pytest.raises(BertkitError) as error:
        parse_args(Ranged, [f"--{flag}={value}"], prog="bertkit t")
    assert str(error.value) == f"bertkit t: `--{flag}` is {shown}; it must be {bound}"


def test_unranged_numbers_take_anything_but_nested_ranges_are_checked():
    assert parse_args(Ranged, ["--offset=-1e300"], prog="t").offset == -1e300
    with pytest.raises(BertkitError, match=r"`--optim.lr` is -1.0; it must be > 0"):
        parse_args(RangedOptim, ["--optim.lr=-1"], prog="t")


@pytest.mark.parametrize(
    "yaml_text, flag, shown, bound",
    [
        ("optim:\n  lr: -1\n", "optim.lr", "-1.0", "> 0"),
        ("optim:\n  lr: .nan\n", "optim.lr", "nan", "> 0"),
        ("optim:\n  lr: .inf\n", "optim.lr", "inf", "> 0"),
        ("optim:\n  lr: nan\n", "optim.lr", "nan", "> 0"),  # a string, converted like a flag's value
        ("optim:\n  warmup_steps: -3\n", "optim.warmup-steps", "-3", ">= 0"),
    ],
)
def test_yaml_values_are_checked_like_flags(tmp_path, yaml_text, flag, shown, bound):
    path = tmp_path / "run.yaml"
    path.write_text(yaml_text)
    with pytest.raises(BertkitError) as error:
        parse_args(RangedOptim, ["--config", str(path)], prog="t")
    assert f"`--{flag}` is {shown}; it must be {bound}" in str(error.value)
    # a flag overriding the bad YAML value is what counts
    assert parse_args(RangedOptim, ["--config", str(path), f"--{flag}=1"], prog="t") is not None


def test_a_flag_overrides_a_bad_yaml_value_spelled_with_dashes(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("optim:\n  warmup-steps: -3\n")
    assert parse_args(RangedOptim, ["--config", str(path), "--optim.warmup-steps=1"], prog="t").optim.warmup_steps == 1


def test_from_dict_checks_ranges_too():
    with pytest.raises(BertkitError, match=r"run.yaml: `--steps` is 0; it must be >= 1"):
        from_dict(Ranged, {"steps": 0}, source="run.yaml")


def test_help_shows_each_range():
    text = help_text(Ranged, "bertkit t")
    lines = {line.split()[0]: line for line in text.splitlines() if line.startswith("  --")}
    assert lines["--steps"].endswith("(default 1; >= 1)")
    assert lines["--lr"].endswith("(default 0.1; > 0)")
    assert lines["--share"].endswith("(default 0.5; >= 0 and <= 1)")
    assert lines["--dropout"].endswith("(default 0.0; >= 0 and < 1)")
    assert lines["--seeds"].endswith("(default []; >= 0)")
    assert lines["--offset"].endswith("(default 0.0)")
