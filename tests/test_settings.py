"""Training settings come from one dataclass: options, recipes, overrides and the saved config.yaml agree."""

import argparse
from pathlib import Path

import pytest
import yaml

from loghi_ft.cli import build_parser
from loghi_ft.errors import UserError
from loghi_ft.settings import command_words, recipe_text, resolve, split_overrides
from loghi_ft.train.settings import TrainSettings


def parse(argv: list[str]) -> TrainSettings:
    """Settings as `loghi-ft train ARGV` resolves them."""
    words, overrides = split_overrides(argv)
    return resolve(TrainSettings, build_parser().parse_args(["train", *words]), overrides)


def test_nothing_typed_gives_the_dataclass_defaults():
    assert parse([]) == TrainSettings()


def test_the_recipe_a_run_writes_reads_back_to_the_same_settings(tmp_path):
    chosen = TrainSettings(train_list=[Path("a b.txt"), Path("/data/c.txt")], val_list=Path("v.txt"),
                           base_model=Path("models/base"), epochs=7, learning_rate=3e-4, gpu="0,1", max_steps=90,
                           tensorboard=True, aug_blur=0.0, freeze="conv,rnn", charset_mode="replace")
    recipe = tmp_path / "config.yaml"
    recipe.write_text(recipe_text(chosen), encoding="utf-8")
    assert parse(["--config", str(recipe)]) == chosen
    # and every line of it says what the setting does
    lines = [line for line in recipe.read_text(encoding="utf-8").splitlines() if line and not line.startswith("#")]
    assert len(lines) == len(TrainSettings.__dataclass_fields__)
    assert all(" # " in line and line.split(" # ", 1)[1].strip() for line in lines)


def test_typed_options_beat_the_recipe_and_overrides_beat_both(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"epochs": 7, "batch_size": 4, "no_augment": True}), encoding="utf-8")
    s = parse(["--config", str(recipe), "--epochs", "9", "--batch-size", "5", "batch_size=6", "no_augment=off"])
    assert (s.epochs, s.batch_size, s.no_augment) == (9, 6, False)


def test_the_words_handed_to_torchrun_parse_back_to_the_same_settings():
    chosen = TrainSettings(train_list=[Path("x.txt"), Path("y.txt")], val_list=Path("v.txt"), spec="small",
                           output=Path("out"), model_name="m", resume=True, workers=0, aug_invert=0.1)
    assert parse(command_words(chosen)) == chosen


@pytest.mark.parametrize("word, message", [("epochs=many", "bad value for epochs"),
                                           ("epochs=2.5", "bad value for epochs"),
                                           ("charset_mode=merge", "charset_mode must be one of union, keep, replace"),
                                           ("no_such=1", "unknown setting 'no_such'"),
                                           ("train_list=[a, b]", None)])
def test_overrides_are_checked_against_the_settings_types(word, message):
    if message is None:
        assert parse([word]).train_list == [Path("a"), Path("b")]
        return
    with pytest.raises(UserError, match=message):
        parse([word])


def test_a_recipe_key_that_is_no_setting_is_named_with_the_file(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("epochs: 3\nlearning-rte: 0.1\n", encoding="utf-8")
    with pytest.raises(UserError, match=f"{recipe}: unknown setting 'learning_rte'"):
        parse(["--config", str(recipe)])
