"""The user's config dir layered over the shipped configs: ``./conf`` found by itself, the user's files
searched first, ``list``/``check`` and composition seeing both."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelfactory._config_dirs import ConfigDirs, auto_user_dir, shipped_dir
from modelfactory.cli import main

MINE = "_target_: modelfactory.CallableModel\nfn: mymod.reply\n"


def _project(tmp_path: Path) -> Path:
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "model" / "mine.yaml").write_text(MINE)
    (tmp_path / "mymod.py").write_text("def reply(messages, **kwargs):\n    return 'mine'\n")
    return tmp_path


def test_the_shipped_configs_are_inside_the_package() -> None:
    assert shipped_dir().parent.name == "modelfactory"
    assert (shipped_dir() / "config.yaml").is_file() and (shipped_dir() / "__init__.py").is_file()
    assert "transformers_tiny" in ConfigDirs().names("model")


@pytest.mark.parametrize(
    ("files", "found"),
    [
        ({}, False),
        ({"conf/model/mine.yaml": MINE}, True),
        ({"conf/task/mine.yaml": "type: prompt\n"}, True),
        ({"conf/config.yaml": "defaults:\n  - model: transformers_tiny\n"}, True),
        ({"conf/nginx.conf": "server {}\n"}, False),  # a conf/ of something else is not ours to read
        ({"conf": ""}, False),  # a file named conf
    ],
)
def test_dot_conf_is_found_only_when_it_looks_like_a_config_dir(
    tmp_path: Path, files: dict[str, str], found: bool
) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert (auto_user_dir(tmp_path) == tmp_path / "conf") is found


def test_the_shipped_dir_itself_is_never_a_user_dir() -> None:
    assert auto_user_dir(shipped_dir().parent) is None
    assert ConfigDirs(shipped_dir()).dirs == [shipped_dir()]


def test_the_users_files_come_first_and_ours_stay_reachable(tmp_path: Path) -> None:
    user = _project(tmp_path) / "conf"
    (user / "model" / "openai_gpt4o.yaml").write_text(MINE)  # a user's file of the same name wins
    configs = ConfigDirs(user)
    assert configs.dirs == [user, shipped_dir()]
    assert {"mine", "openai_gpt4o", "transformers_tiny"} <= set(configs.names("model"))
    assert configs.file("model", "openai_gpt4o") == user / "model" / "openai_gpt4o.yaml"
    assert configs.file("model", "azure_openai") == shipped_dir() / "model" / "azure_openai.yaml"
    assert configs.compose(["model=mine"]).model.fn == "mymod.reply"
    assert configs.compose(["model=openai_gpt4o"]).model.fn == "mymod.reply"
    assert configs.compose(["model=transformers_tiny"]).model.model_id == "builtin:tiny-llama"


def test_a_users_config_yaml_replaces_ours(tmp_path: Path) -> None:
    user = _project(tmp_path) / "conf"
    (user / "config.yaml").write_text("defaults:\n  - model: mine\n  - _self_\nprompt: from the user\n")
    cfg = ConfigDirs(user).compose([])
    assert cfg.prompt == "from the user" and cfg.model.fn == "mymod.reply"


def test_list_and_check_see_the_users_configs_and_ours(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(_project(tmp_path))
    assert main(["list"]) == 0
    names = capsys.readouterr().out.split()
    assert "mine" in names and "openai_gpt4o" in names
    assert main(["check", "model=mine"]) == 0, capsys.readouterr().out
    monkeypatch.setenv("OPENAI_API_KEY", "placeholder")
    assert main(["check", "model=openai_gpt4o"]) == 0, capsys.readouterr().out


def test_an_explicit_config_dir_that_does_not_exist_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config-dir", str(tmp_path / "nope"), "list"]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_compose_once_composes_each_set_of_overrides_once_read_only() -> None:
    """``modelfactory check`` passes a ComposeOnce through its three readings of the same configs."""
    from omegaconf.errors import ReadonlyConfigError

    from modelfactory._config_dirs import ComposeOnce

    once = ComposeOnce.over(ConfigDirs())
    first = once.compose(["model=llamacpp_smollm2"])
    assert once.compose(["model=llamacpp_smollm2"]) is first and len(once.composed) == 1
    with pytest.raises(ReadonlyConfigError):
        first.model.max_new_tokens = 3  # shared: a write must fail, not reach the next reader
    assert once.compose(["model=transformers_smollm2"]).model._target_.endswith("TransformersModel")
    assert "hydra" in once.compose(["model=llamacpp_smollm2"], return_hydra_config=True)
    assert len(once.composed) == 2  # Hydra's own config is composed fresh, not kept
    assert ConfigDirs().compose(["model=llamacpp_smollm2"]) is not first  # plain ConfigDirs: no cache
