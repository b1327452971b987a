"""modelfactory._overrides: which command-line overrides carry a secret, and what to do instead."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelfactory._overrides import (
    mask_job_config,
    refusal_message,
    scrub_saved_config,
    secret_overrides,
    unescape,
)

CONF = Path(__file__).resolve().parents[1] / "modelfactory" / "conf"


@pytest.mark.parametrize(
    ("arg", "refused"),
    [
        ("model.api_key=sk-live-123", True),
        ("+model.token=hf_abc", True),
        ("++model.client_kwargs.default_headers.Authorization=Bearer x", True),
        ("model.api_base=https://user:pw@example.com/v1", True),
        ("model.api_key=${oc.env:MY_KEY}", False),
        ("model.api_key=null", False),
        ("model.max_tokens=5", False),
        ("model.max_new_tokens=64", False),
        ("prompt=what is a token?", False),
        # values that hide a key (issue 16, item 2)
        ("+model.generation_kwargs={api_key:sk-live-123}", True),
        ('+model.client_kwargs.default_headers={Authorization:"Bearer sk-live-123"}', True),
        ("+model.client_kwargs.default_headers.X-Auth=sk-live-123", True),
        ("++hydra.job.env_set={OPENAI_API_KEY:sk-live-123}", True),
        ("+hydra.job.env_set.SRV_AUTH=sk-live-123", True),
        ("++model.api_key=${oc.env:UNSET,sk-live-123}", True),
        ("model.api_base=http://sk-live-123@host/v1", True),
        ("model.api_base=http://:sk-live-123@host/v1", True),
        ("model.api_base=http://host/v1?api_key=sk-live-123", True),
        # ... and values that do not
        ("+model.client_kwargs.default_headers.OpenAI-Beta=assistants=v2", False),
        ("+model.client_kwargs.default_headers={Content-Type:application/json,User-Agent:me}", False),
        ("+model.generation_kwargs={top_k:5,max_tokens:9}", False),
        ("++model.api_key=${oc.env:MY_KEY,null}", False),
        ("++hydra.job.env_set={CUDA_VISIBLE_DEVICES:0}", False),
        ("+hydra.job.env_set.OMP_NUM_THREADS=1", False),
        # issue 22, item 3: nested dicts, decoded literals, any env_set variable, short URL params
        ("+model.client_kwargs={default_headers:{X-Custom: sk-live-123}}", True),
        ("+model.generation_kwargs={extra_headers: {X-Custom: sk-live-123}}", True),
        ("+generation.extra_headers={X-Custom: sk-live-123}", True),
        ("+model.fallbacks=[{api_key: sk-live-123}]", True),
        ("model.api_key=${oc.decode:sk-live-123}", True),
        ("model.api_key='${oc.decode:\"sk-live-123\"}'", True),
        ("model.api_key=${oc.create:sk-live-123}", True),
        ("model.api_key=${oc.select:nowhere,sk-live-123}", True),
        ("+hydra.job.env_set.GEN_CRED=sk-live-123", True),
        ("+hydra.job.env_set.AUTHOR=me", True),  # any env_set variable but the public ones
        ("++hydra.job.env_set={GEN_CRED: sk-live-123}", True),
        ("model.api_base=http://host/v1?pwd=sk-live-123", True),
        ("model.api_base=http://host/v1?code=sk-live-123", True),
        ("model.api_key=choice(sk-live-123,sk-live-456)", True),
        ("+model.client_kwargs={default_headers:{X-Custom: sk-live-123}", True),  # Hydra refuses: so do we
        ("+model.client_kwargs={default_headers:{OpenAI-Beta: assistants}}", False),
        ("+model.client_kwargs={default_headers:{X-Custom: '${oc.env:MY_KEY}'}}", False),
        ("model.api_key=${oc.decode:${oc.env:MY_KEY}}", False),
        ("model.api_key=sk-${oc.env:MY_KEY}", False),  # a prefix joined to the key from the environment
        ("model.api_key=${oc.env:USER_PART}:${oc.env:KEY_PART}", False),
        ("model.api_key=sk-live-${oc.env:MY_KEY}", True),  # text long enough to hold a key
        ("++model.client_kwargs.default_headers.Authorization='Bearer sk-live-123 ${oc.env:X}'", True),
        ("model.api_key=${model.other_key}", False),
        ("++model.client_kwargs.default_headers.Authorization=Bearer ${oc.env:MY_KEY}", False),
        ("model.api_base=http://host/v1?codec=opus", False),
        ("+generation.stop_token_ids=[1,2]", False),
    ],
)
def test_secret_overrides(arg: str, refused: bool) -> None:
    assert bool(secret_overrides([arg])) is refused


def test_refusal_names_the_env_var_and_never_the_value() -> None:
    args = ["model=azure_openai", "model.api_key=azure-secret-value"]
    text = refusal_message(secret_overrides(args), args, CONF)
    assert "AZURE_OPENAI_API_KEY" in text and "azure-secret-value" not in text


def test_scrub_saved_config_masks_literal_keys_only(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("model:\n  api_key: sk-literal\n  token: ${oc.env:HF_TOKEN}\n  max_tokens: 5\n")
    assert scrub_saved_config(path) is True
    text = path.read_text()
    assert "sk-literal" not in text and "${oc.env:HF_TOKEN}" in text and "max_tokens: 5" in text
    assert scrub_saved_config(path) is False  # nothing left to mask


def test_unescape_turns_typed_escapes_into_characters() -> None:
    assert unescape(r"\n\n") == "\n\n"
    assert unescape(r"a\tb\r\n") == "a\tb\r\n"
    assert unescape(r"C:\\new") == r"C:\new"  # an escaped backslash is one backslash, not a newline
    assert unescape(r"\d+ and \x") == r"\d+ and \x"  # other backslashes stay
    assert unescape("Observation:") == "Observation:"


@given(st.text(alphabet=st.sampled_from(["a", "\n", "\t", "\r", "\\", " ", "n", "t"])))
def test_unescape_inverts_escaping(text: str) -> None:
    typed = text.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")
    assert unescape(typed) == text


def test_refusal_without_model_names_the_configs_default_model(tmp_path: Path) -> None:
    """No ``model=`` on the command line: the fix is for the model ``config.yaml`` chooses."""
    (tmp_path / "model").mkdir()
    (tmp_path / "config.yaml").write_text("defaults:\n  - model: my_azure\n  - _self_\n")
    (tmp_path / "model" / "my_azure.yaml").write_text(
        (CONF / "model" / "azure_openai.yaml").read_text(encoding="utf-8")
    )
    args = ["model.api_key=azure-secret-value"]
    text = refusal_message(secret_overrides(args), args, tmp_path)
    assert "fix (model=my_azure): export AZURE_OPENAI_API_KEY=" in text
    assert "azure-secret-value" not in text


def test_mask_job_config_masks_literal_keys_in_place() -> None:
    """The job's own config object is what Hydra returns from it (submitit pickles it): masked in place,
    nested and in lists, interpolations and everything else kept."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(
        {
            "model": {
                "api_key": "sk-literal-1",
                "token": "${oc.env:HF_TOKEN}",
                "members": [{"api_key": "sk-literal-2"}, {"api_base": "http://u:pw-3@h/v1"}],
                "max_tokens": 5,
            }
        }
    )
    OmegaConf.set_struct(cfg, True)
    OmegaConf.set_readonly(cfg, True)
    assert mask_job_config(cfg) is True
    data = OmegaConf.to_container(cfg, resolve=False)
    assert data == {
        "model": {
            "api_key": "**********",
            "token": "${oc.env:HF_TOKEN}",
            "members": [{"api_key": "**********"}, {"api_base": "http://u:**********@h/v1"}],
            "max_tokens": 5,
        }
    }
    assert OmegaConf.is_readonly(cfg) and mask_job_config(cfg) is False


_word = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=8)


@given(
    outer=st.lists(st.sampled_from(["client_kwargs", "generation_kwargs", "extra", "opts"]), max_size=3),
    container=st.sampled_from(["default_headers", "headers", "extra_headers"]),
    header=st.builds(lambda a, b: f"X-{a.capitalize()}-{b}", _word, _word),
    value=st.builds(lambda a, b: f"{a}-{b}-planted", _word, _word),
    siblings=st.dictionaries(st.sampled_from(["top_k", "seed", "mode"]), _word, max_size=2),
)
def test_a_header_value_is_refused_however_deep_the_dict_nests_it(
    outer: list[str], container: str, header: str, value: str, siblings: dict[str, str]
) -> None:
    """Issue 22, item 3: a non-public header's value is a credential whatever the header is called and
    however the override nests it: ``key.a={b: {default_headers: {X-Any: K}}}`` as much as
    ``key.a.b.default_headers.X-Any=K``."""
    inner = "{" + ", ".join([f"{header}: {value}", *(f"{k}: {v}" for k, v in siblings.items())]) + "}"
    text = f"{{{container}: {inner}}}"
    for name in reversed(outer[1:]):
        text = f"{{{name}: {text}}}"
    key = "+model." + (outer[0] if outer else "client_kwargs")
    assert secret_overrides([f"{key}={text}"]) == [key]
    dotted = ".".join(["+model", *outer, container, header])
    assert secret_overrides([f"{dotted}={value}"]) == [dotted]
