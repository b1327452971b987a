"""Constructor signatures derived from the specs: positional main argument, typed keywords, help()."""

from __future__ import annotations

import inspect
import pydoc
from typing import Any, ClassVar

import pytest
from pydantic import Field

import modelfactory
from modelfactory import CallableModel, ChatMessage, FallbackModel, Model
from modelfactory.errors import ConfigError
from modelfactory.settings import ModelSpec

CLASSES = [
    "TransformersModel",
    "HfApiModel",
    "InferenceClientModel",
    "LiteLLMModel",
    "OpenAIServerModel",
    "AzureOpenAIServerModel",
    "CallableModel",
    "FallbackModel",
]
MAIN = {"CallableModel": "fn", "FallbackModel": "models"}


def echo(messages: list[dict[str, Any]], stop_sequences: list[str] | None = None) -> str:
    return str(messages[-1]["content"])


@pytest.mark.parametrize("name", CLASSES)
def test_signature_is_the_spec(name: str) -> None:
    cls = getattr(modelfactory, name)
    sig = inspect.signature(cls)
    params = list(sig.parameters.values())
    assert {p.name for p in params} == set(cls.Spec.model_fields)  # one source of truth, nothing else
    main = MAIN.get(name, "model_id")
    assert params[0].name == main and params[0].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params[1:])
    for p in params:
        assert "SecretStr" not in str(p.annotation)  # callers pass plain strings
        assert p.annotation is not inspect.Parameter.empty


def test_signature_types_and_defaults() -> None:
    sig = inspect.signature(modelfactory.LiteLLMModel)
    assert sig.parameters["model_id"].default is inspect.Parameter.empty  # required
    assert sig.parameters["temperature"].annotation == float | None
    assert sig.parameters["api_key"].annotation == str | None
    assert sig.parameters["timeout"].default == 120.0
    azure = inspect.signature(modelfactory.AzureOpenAIServerModel)
    assert azure.parameters["model_id"].default is None  # AZURE_OPENAI_MODEL may supply it
    assert inspect.signature(modelfactory.HfApiModel).parameters["model_id"].default.startswith("meta-llama/")
    # The doc's call binds against the signature as it does against the class.
    sig.bind("anthropic/claude-3-5-sonnet-latest", temperature=0.2, max_tokens=10)


def test_main_argument_positionally_as_in_the_docs() -> None:
    model = modelfactory.LiteLLMModel("anthropic/claude-3-5-sonnet-latest", temperature=0.2, max_tokens=10)
    assert (model.model_id, model.spec.temperature, model.spec.max_tokens) == (
        "anthropic/claude-3-5-sonnet-latest",
        0.2,
        10,
    )
    assert CallableModel(echo)([{"role": "user", "content": "hi"}]).content == "hi"
    chain = FallbackModel([{"_target_": "CallableModel", "fn": echo}])
    assert chain([{"role": "user", "content": "yo"}]).content == "yo"


def test_extra_positional_is_a_config_error_with_every_other_problem() -> None:
    with pytest.raises(ConfigError) as info:
        modelfactory.OpenAIServerModel("gpt-4o", "https://secret.example/v1", "sk-SECRET", temperature=7)
    keys = [p.key for p in info.value.problems]
    assert keys[0] == "positional arguments" and "temperature" in keys
    text = str(info.value)
    assert "takes 1 positional argument (model_id) but 3 were given" in text
    assert "sk-SECRET" not in text  # a key passed positionally is never echoed


def test_main_argument_given_twice() -> None:
    with pytest.raises(ConfigError, match="given both positionally and by name"):
        modelfactory.LiteLLMModel("a/b", model_id="c/d")


def test_instance_signature_is_the_call() -> None:
    model = CallableModel(echo)
    assert list(inspect.signature(model).parameters)[:2] == ["messages", "stop_sequences"]


def test_help_shows_signature_arguments_and_smolagents_names() -> None:
    text = pydoc.render_doc(modelfactory.TransformersModel, renderer=pydoc.plaintext)
    assert "TransformersModel(model_id: str, *, revision: str | None = None" in text
    assert "device: str = 'auto'" in text and "auto (cuda if available, else cpu)" in text
    assert "device_map -> device" in text and "torch_dtype -> dtype" in text
    azure = pydoc.render_doc(modelfactory.AzureOpenAIServerModel, renderer=pydoc.plaintext)
    assert "env AZURE_OPENAI_ENDPOINT" in azure and "env OPENAI_API_VERSION" in azure


def test_a_users_subclass_gets_its_own_signature() -> None:
    class EchoSpec(ModelSpec):
        main_argument: ClassVar[str] = "prefix"
        model_id: str = "echo"
        prefix: str = Field(description="put before the reply")

    class Echo(Model):
        """Echoes the last message after a prefix."""

        Spec = EchoSpec

        def _generate(self, req: Any) -> ChatMessage:
            return ChatMessage(content=self.spec.prefix + req.messages[-1]["content"])  # type: ignore[attr-defined]

    assert list(inspect.signature(Echo).parameters)[0] == "prefix"
    assert Echo(">")([{"role": "user", "content": "x"}]).content == ">x"
    assert "put before the reply" in (Echo.__doc__ or "")
