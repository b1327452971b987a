"""The response-cache key is built from the identity each model supplies; the cache knows no backend."""

from __future__ import annotations

from typing import Any

import pytest

from modelfactory.backends.callable import CallableModel, CallableSpec
from modelfactory.backends.fallback import FallbackModel
from modelfactory.backends.hf_inference import HfApiSpec
from modelfactory.backends.litellm import LiteLLMSpec
from modelfactory.backends.openai import OpenAIServerModel, OpenAIServerSpec
from modelfactory.cache import Identified, model_identity, request_key
from modelfactory.messages import GenerationRequest
from modelfactory.settings import ApiSpec, ModelSpec

REQ = GenerationRequest(messages=[{"role": "user", "content": "hi"}])


def echo(messages: Any, **kwargs: Any) -> str:
    return "ok"


FN = f"{__name__}.echo"


class Versioned(CallableModel):
    """A backend whose replies depend on something outside its spec: it says so in its identity."""

    version = "v1"

    def cache_identity(self) -> dict[str, Any]:
        return {**super().cache_identity(), "version": self.version}


def test_the_model_supplies_its_identity() -> None:
    a, b = Versioned(fn=FN), Versioned(fn=FN)
    assert isinstance(a, Identified)
    assert request_key(a, REQ) == request_key(b, REQ)
    b.version = "v2"
    assert request_key(a, REQ) != request_key(b, REQ)
    assert model_identity(b)["version"] == "v2"


def test_exclusions_add_up_along_the_spec_classes() -> None:
    base = ModelSpec.cache_exclusions()
    assert {"cache", "retry", "temperature", "generation_kwargs"} <= base
    assert ApiSpec.cache_exclusions() == base | {"timeout"}
    assert OpenAIServerSpec.cache_exclusions() == base | {"timeout", "max_retries", "client_kwargs"}
    assert HfApiSpec.cache_exclusions() == base | {"timeout", "client_kwargs", "bill_to"}
    assert LiteLLMSpec.cache_exclusions() == base | {"timeout", "num_retries"}
    assert CallableSpec.cache_exclusions() == base


def test_excluded_and_secret_fields_stay_out_of_the_identity() -> None:
    m = OpenAIServerModel(model_id="m", api_base="http://h:1/v1", api_key="sk-1", timeout=5, temperature=0.5)
    identity = m.cache_identity()
    assert identity["model_id"] == "m" and identity["api_base"] == "http://h:1/v1"
    assert not {"api_key", "timeout", "temperature", "cache", "retry"} & set(identity)


def test_a_member_model_enters_its_chains_key_with_its_defaults() -> None:
    def chain(temperature: float) -> FallbackModel:
        return FallbackModel(models=[CallableModel(fn=FN, temperature=temperature)])

    assert request_key(chain(0.1), REQ) == request_key(chain(0.1), REQ)
    assert request_key(chain(0.1), REQ) != request_key(chain(0.9), REQ)


# ------------------------------------------------------------------ issue 16, item 12


def openai(**kw: Any) -> OpenAIServerModel:
    return OpenAIServerModel(model_id="m", api_base="http://h:1/v1", api_key="sk-1", **kw)


def test_a_whole_number_is_one_key_however_it_is_typed() -> None:
    m = openai()
    as_int = GenerationRequest(messages=REQ.messages, params={"temperature": 0, "top_p": 1})
    as_float = GenerationRequest(messages=REQ.messages, params={"temperature": 0.0, "top_p": 1.0})
    assert request_key(m, as_int) == request_key(m, as_float)
    other = GenerationRequest(messages=REQ.messages, params={"temperature": 0.5, "top_p": 1})
    assert request_key(m, other) != request_key(m, as_int)


def test_an_api_key_in_the_params_does_not_change_the_key() -> None:
    m = openai()
    plain = GenerationRequest(messages=REQ.messages, params={"top_k": 5})
    keyed = GenerationRequest(messages=REQ.messages, params={"top_k": 5, "api_key": "sk-extra-1234"})
    assert request_key(m, plain) == request_key(m, keyed)

    def headers(value: str) -> GenerationRequest:
        return GenerationRequest(messages=REQ.messages, params={"extra_headers": {"X-Auth": value}})

    assert request_key(m, headers("sk-extra-5678")) == request_key(m, headers("sk-other-0000"))


def test_a_public_header_is_part_of_the_identity_and_a_credential_header_is_not() -> None:
    plain = openai()
    beta = openai(client_kwargs={"default_headers": {"OpenAI-Beta": "assistants=v2"}})
    auth = openai(client_kwargs={"default_headers": {"X-Auth": "sk-header-9999"}})
    assert request_key(plain, REQ) != request_key(beta, REQ)  # another API version: no false hit
    assert request_key(plain, REQ) == request_key(auth, REQ)  # another caller: the same reply
    assert "sk-header-9999" not in str(model_identity(auth))


# ------------------------------------------------------------------ issue 22, item 7


def _with(**params: Any) -> GenerationRequest:
    return GenerationRequest(messages=REQ.messages, params=params)


@pytest.mark.parametrize(
    ("name", "one", "two"),
    [
        ("stop_token_ids", [2], [7, 9]),
        ("allowed_token_ids", [1, 2], [3]),
        ("eos_token_id", 2, 3),
        ("keywords", ["a"], ["b"]),
        ("bad_words", ["x"], ["y"]),
        ("auth_mode", "a", "b"),
        ("token_type", "a", "b"),
    ],
)
def test_a_parameter_that_merely_contains_key_or_token_is_part_of_the_key(
    name: str, one: Any, two: Any
) -> None:
    """Issue 22, item 7: only a credential's *name* leaves the key, not any name holding "key"/"token"."""
    m = openai()
    assert request_key(m, _with(**{name: one})) != request_key(m, _with(**{name: two}))
    assert request_key(m, _with(**{name: one})) != request_key(m, _with())


@pytest.mark.parametrize(
    "name",
    ["api_key", "token", "hf_token", "access_token", "client_secret", "password", "x-api-key", "apiKey"],
)
def test_a_credential_in_the_params_still_stays_out_of_the_key(name: str) -> None:
    m = openai()
    assert request_key(m, _with(top_k=5, **{name: "sk-one-1111"})) == request_key(m, _with(top_k=5))
    headers = {"extra_headers": {"X-Custom": "sk-one-1111"}}
    assert request_key(m, _with(**headers)) == request_key(m, _with(extra_headers={"X-Custom": "sk-two"}))


def test_a_default_query_parameter_is_part_of_the_key_and_a_credential_one_is_not() -> None:
    """``client_kwargs.default_query`` goes on every request's URL: ``?api-version=`` or ``?mode=`` can change
    the reply (no false hit), ``?code=`` / ``?api_key=`` only identify the caller."""
    plain = openai()
    v1 = openai(client_kwargs={"default_query": {"api-version": "1"}})
    v2 = openai(client_kwargs={"default_query": {"api-version": "2"}})
    assert len({request_key(plain, REQ), request_key(v1, REQ), request_key(v2, REQ)}) == 3
    for secret in ("code", "api_key", "sig", "token"):
        one = openai(client_kwargs={"default_query": {"api-version": "1", secret: "sk-q-1111"}})
        two = openai(client_kwargs={"default_query": {"api-version": "1", secret: "sk-q-2222"}})
        assert request_key(one, REQ) == request_key(two, REQ) == request_key(v1, REQ)
        assert "sk-q-1111" not in str(model_identity(one))


def test_a_query_parameter_in_the_url_is_kept_by_the_same_rule() -> None:
    def base(query: str) -> str:
        return request_key(
            OpenAIServerModel(model_id="m", api_base=f"http://h:1/v1?{query}", api_key="k"), REQ
        )

    assert base("keywords=a") != base("keywords=b")
    assert base("code=a") == base("code=b") == base("pwd=c") == request_key(openai(), REQ)
