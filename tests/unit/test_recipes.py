"""Recipes in the package: names resolve wherever a config path is taken, `config list` and `config init`, and each
recipe says in its first lines what it is for, what it cost on which machine and what it reached."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import plantpheno as pp
from plantpheno.cli import main
from plantpheno.config import load_config
from plantpheno.errors import ConfigError
from plantpheno.recipes import RECIPES_DIR, find_recipe, list_recipes, resolve, write_recipe
from plantpheno.tuning import load_tuning_file

NAMES = ["classify", "classify_adapt", "classify_full", "classify_scratch", "demo", "traits", "traits_full",
         "tune/demo_space"]


def test_the_recipes_are_the_fixed_names_training_configs_first():
    recipes = list_recipes()
    assert [r.name for r in recipes] == NAMES
    assert [r.kind for r in recipes] == ["config"] * 7 + ["space"]
    assert all(r.path.is_file() and r.path.is_relative_to(RECIPES_DIR) for r in recipes)


@pytest.mark.parametrize("recipe", list_recipes(), ids=lambda r: r.name)
def test_each_recipe_opens_with_what_it_is_for_its_cost_and_result_and_how_to_run_it(recipe):
    text = recipe.path.read_text(encoding="utf-8")
    header = text[:text.index("\n" + ("tuning:" if recipe.kind == "space" else "seed:"))]
    assert all(line.startswith("#") for line in header.splitlines()), "the header is one comment block at the top"
    assert len(recipe.summary) > 30 and len(recipe.summary) <= 120, recipe.summary
    assert re.search(r"\bMeasured\b|\bNot measured\b", header), "say what it reached, or that it was not measured"
    assert re.search(r"2-core (Intel Xeon|AMD EPYC)", header), "name the machine behind the figures"
    short = recipe.name if recipe.kind == "config" else "demo " + recipe.name
    assert f"plantpheno {'tune' if recipe.kind == 'space' else 'train'} {short}" in header, "a usage line by name"
    assert "../shared" not in text, "a user's install has no ../shared folder"


@pytest.mark.parametrize("value", ["classify", "classify.yaml", "classify.yml"])
def test_a_recipe_name_with_or_without_its_suffix_is_the_packaged_file(value, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve(value) == RECIPES_DIR / "classify.yaml"
    assert resolve("tune/demo_space", kind="space") == RECIPES_DIR / "tune" / "demo_space.yaml"


def test_an_existing_file_wins_over_a_recipe_and_a_folder_of_that_name_does_not(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").mkdir()  # e.g. the user's image folder is called demo
    assert resolve("demo") == RECIPES_DIR / "demo.yaml"
    (tmp_path / "demo.yaml").write_text("data: {root: mine}\n")
    assert resolve("demo.yaml") == Path("demo.yaml")
    assert load_config("demo.yaml").data.root == Path("mine")
    assert load_config("demo").data.root == Path("leaves")


def test_an_unknown_name_says_the_path_does_not_exist_and_lists_the_recipes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        resolve("clasify")
    message = str(info.value)
    assert message.startswith("config file clasify does not exist, and 'clasify' is not a recipe name")
    assert ("the training recipes are: classify, classify_adapt, classify_full, classify_scratch, demo, traits, "
            "traits_full") in message
    with pytest.raises(ConfigError, match="configs/plantvillage_pretrained.yaml is now the recipe classify"):
        resolve("configs/plantvillage_pretrained.yaml")
    with pytest.raises(ConfigError, match=r"tuning file nope does not exist.*search-space recipes are: tune/demo_"):
        load_tuning_file("nope")


def test_a_recipe_of_the_other_kind_is_refused_by_name():
    with pytest.raises(ConfigError, match="recipe tune/demo_space is a search space for `plantpheno tune CONFIG SPACE"):
        load_config("tune/demo_space")
    with pytest.raises(ConfigError, match="recipe demo is a training config, not a search space"):
        load_tuning_file("demo")


def test_train_tune_config_show_and_the_python_api_take_recipe_names(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["config", "show", "classify", "training.epochs=3"]) == 0
    shown = capsys.readouterr().out
    assert "backbone: tf_efficientnet_lite0" in shown and "epochs: 3" in shown
    assert main(["tune", "demo", "tune/demo_space", "--sampler", "grid", "--trials", "2", "--dry-run"]) == 0
    assert capsys.readouterr().out.startswith("study demo_space")
    assert pp.load_config("traits", {"training.epochs": 2}).task == "regression"
    assert main(["train", "--config", "clasify", "training.epochs=1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'clasify' is not a recipe name" in err and "Traceback" not in err


def test_config_list_names_every_recipe_with_its_first_line(capsys):
    assert main(["config", "list"]) == 0
    out = capsys.readouterr().out
    for recipe in list_recipes():
        assert re.search(rf"^{re.escape(recipe.name)} +{re.escape(recipe.summary)}$", out, re.M), recipe.name
    assert out.splitlines()[0].startswith("classify ")


def test_config_init_writes_the_recipe_and_keeps_an_existing_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["config", "init", "classify"]) == 0
    written = tmp_path / "classify.yaml"
    assert written.read_text() == (RECIPES_DIR / "classify.yaml").read_text()
    assert "then: plantpheno train classify.yaml" in capsys.readouterr().out
    assert load_config(written) == load_config("classify")
    written.write_text("# mine\ndata: {root: x}\n")
    assert main(["config", "init", "classify"]) == 2
    assert "classify.yaml already exists; give another PATH, or --force to replace it" in capsys.readouterr().err
    assert written.read_text() == "# mine\ndata: {root: x}\n"
    assert main(["config", "init", "classify", "--force"]) == 0
    assert written.read_text() == (RECIPES_DIR / "classify.yaml").read_text()
    (tmp_path / "edits").mkdir()
    assert main(["config", "init", "tune/demo_space.yaml", "edits"]) == 0
    copy = tmp_path / "edits" / "demo_space.yaml"
    assert copy.read_text() == (RECIPES_DIR / "tune" / "demo_space.yaml").read_text()
    assert main(["config", "init", "traits", "sub/dir/t.yaml"]) == 0 and (tmp_path / "sub/dir/t.yaml").is_file()


def test_config_init_refuses_an_unknown_recipe_and_a_path_that_is_not_a_regular_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["config", "init", "classfy"]) == 2
    err = capsys.readouterr().err
    assert "'classfy' is not a recipe name; the recipes are: classify," in err and "tune/demo_space" in err
    target = tmp_path / "target.yaml"
    target.write_text("kept\n")
    (tmp_path / "link.yaml").symlink_to(target)
    assert main(["config", "init", "demo", "link.yaml", "--force"]) == 2
    assert "link.yaml exists and is not a regular file" in capsys.readouterr().err
    assert target.read_text() == "kept\n" and (tmp_path / "link.yaml").is_symlink()
    with pytest.raises(ConfigError, match="not a recipe name"):
        write_recipe(str(RECIPES_DIR / "demo.yaml"))  # a path is not a name: init copies recipes only
    assert find_recipe("tune/demo_space.yaml") is not None and find_recipe("space") is None
