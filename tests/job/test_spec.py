"""The job spec (modelfactory/job/spec.py): the one reader of the app's config. Defaults live in the spec
and the shipped config.yaml only repeats them; old "batch" keys are refused with their new names; a
typo in a runner/output key is refused instead of ignored; task configs with scorers are accepted."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from omegaconf import OmegaConf

from modelfactory.batch import BatchOptions
from modelfactory.errors import ConfigError
from modelfactory.job import app
from modelfactory.job.runner import run_items
from modelfactory.job.spec import JobSpec, OutputSpec, RunnerSpec
from tests.job.test_app import app_config, write_items


def test_the_shipped_config_repeats_the_spec_defaults() -> None:
    cfg = app_config("model=custom_callable")
    shipped = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(shipped, dict)
    assert shipped["runner"] == RunnerSpec().model_dump()
    assert shipped["output"] == OutputSpec().model_dump()
    spec = JobSpec.from_config(cfg)
    assert spec.runner == RunnerSpec() and spec.output == OutputSpec()


@pytest.mark.parametrize(
    ("override", "old", "new"),
    [
        ("+runner.batch_size=4", "runner.batch_size", "runner.local_batch_size"),
        ("+runner.mode=batch", "runner.mode", "runner.provider_batch.enabled"),
        ("+runner.batch.poll_s=1", "runner.batch", "runner.provider_batch"),
    ],
)
def test_an_old_batch_key_is_refused_with_its_new_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], override: str, old: str, new: str
) -> None:
    data = write_items(tmp_path / "items.jsonl", ["one"])
    cfg = app_config("model=custom_callable", "task=dataset", f"task.path={data}", override)
    assert app.run_job(cfg, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert f"{old}: was renamed to {new}" in err
    assert not (tmp_path / "out" / "results.jsonl").exists()


@pytest.mark.parametrize(
    ("kwargs", "old"),
    [({"batch_size": 2}, "batch_size"), ({"mode": "batch"}, "mode"), ({"batch": BatchOptions()}, "batch")],
)
def test_run_items_refuses_its_old_keywords(kwargs: dict, old: str) -> None:
    with pytest.raises(ConfigError, match=f"{old}: was renamed to"):
        run_items(lambda messages: "hi", [{"id": "a", "prompt": "q"}], progress=False, **kwargs)


@pytest.mark.parametrize("key", ["runner.concurency", "output.result_fil", "runner.provider_batch.poll"])
def test_a_misspelt_key_is_refused_naming_it(key: str) -> None:
    with pytest.raises(ConfigError) as info:
        JobSpec.from_config(app_config("model=custom_callable", f"+{key}=1"))
    assert f"{key}: unknown key" in str(info.value)


@pytest.mark.parametrize("task", ["humaneval", "capitals"])
def test_task_configs_with_scorers_are_accepted(task: str) -> None:
    spec = JobSpec.from_config(app_config("model=custom_callable", f"task={task}"))
    assert spec.task is not None and spec.task["scorers"]


@given(st.one_of(st.none(), st.text(max_size=3), st.floats(), st.integers(max_value=0)))
def test_concurrency_is_an_integer_of_at_least_one_or_refused(value: object) -> None:
    cfg = {"model": "m", "runner": {"concurrency": value}}
    with pytest.raises(ConfigError, match="runner.concurrency"):
        JobSpec.from_config(cfg)


def test_a_misspelt_runner_override_fails_at_compose_time() -> None:
    """The spec's keys are in the composed config (job_spec, registered with Hydra's ConfigStore): an
    override of a key that is not there is refused by Hydra before any job starts."""
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="concurency"):
        app_config("model=custom_callable", "runner.concurency=2")
