"""Seeded sampling with one random generator per row, so that a row's reply depends on its seed (and its
prompt) only, never on the rows batched with it.

``generate`` samples every row of a batch from torch's one global generator: a seeded row would draw other
numbers in a batch of four than alone. Here a logits processor draws each row's next token from that row's
own ``torch.Generator`` (after the sampling warpers transformers would apply: temperature, top-k, top-p,
min-p, typical-p, epsilon, eta) and hands ``generate`` scores that allow that token only; ``generate``'s own
sampling then can only pick it. A row alone and the same row in any batch draw the same numbers, so they
give the same text, up to the floating-point noise of a padded batch (as greedy rows do).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

__all__ = ["row_sampler", "samples_per_row"]

# transformers' own defaults for the knobs a model's generation_config leaves unset
# (GenerationConfig._get_default_generation_params)
_DEFAULTS: dict[str, Any] = {
    "temperature": 1.0,
    "top_k": 50,
    "top_p": 1.0,
    "min_p": None,
    "typical_p": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "num_beams": 1,
    "num_return_sequences": 1,
}


def _setting(gen_kwargs: dict[str, Any], defaults: Any, name: str) -> Any:
    """A generation setting as ``generate`` resolves it: the call's, else the model's, else transformers'."""
    if name in gen_kwargs:
        return gen_kwargs[name]
    value = getattr(defaults, name, None)
    return _DEFAULTS.get(name) if value is None else value


def samples_per_row(gen_kwargs: dict[str, Any], defaults: Any) -> bool:
    """Whether a sampled call can draw per row: one sequence per row (beams or several returned sequences
    expand the batch; they keep torch's global generator, seeded once)."""
    return (
        bool(gen_kwargs.get("do_sample"))
        and (_setting(gen_kwargs, defaults, "num_beams") or 1) == 1
        and (_setting(gen_kwargs, defaults, "num_return_sequences") or 1) == 1
    )


def _warpers(transformers: Any, gen_kwargs: dict[str, Any], defaults: Any) -> list[Any]:
    """The sampling warpers ``generate`` would apply with these settings, in its order."""

    def get(name: str) -> Any:
        return _setting(gen_kwargs, defaults, name)

    out = []
    if get("temperature") is not None and get("temperature") != 1.0:
        out.append(transformers.TemperatureLogitsWarper(float(get("temperature"))))
    if get("top_k"):
        out.append(transformers.TopKLogitsWarper(top_k=int(get("top_k"))))
    if get("top_p") is not None and get("top_p") < 1.0:
        out.append(transformers.TopPLogitsWarper(top_p=float(get("top_p"))))
    if get("min_p") is not None:
        out.append(transformers.MinPLogitsWarper(min_p=float(get("min_p"))))
    if get("typical_p") is not None and get("typical_p") < 1.0:
        out.append(transformers.TypicalLogitsWarper(mass=float(get("typical_p"))))
    if get("epsilon_cutoff") is not None and 0.0 < get("epsilon_cutoff") < 1.0:
        out.append(transformers.EpsilonLogitsWarper(epsilon=float(get("epsilon_cutoff"))))
    if get("eta_cutoff") is not None and 0.0 < get("eta_cutoff") < 1.0:
        out.append(transformers.EtaLogitsWarper(epsilon=float(get("eta_cutoff"))))
    return out


class _RowSampler:
    """A logits processor: each row's next token drawn from the row's own generator; the scores it returns
    allow that token only (0 there, -inf elsewhere)."""

    def __init__(self, torch: Any, warpers: list[Any], seeds: list[int]) -> None:
        self.torch = torch
        self.warpers = warpers
        self.seeds = seeds
        self.generators: list[Any] | None = None  # made at the first step, on the scores' device

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        torch = self.torch
        if self.generators is None:
            self.generators = [torch.Generator(device=scores.device).manual_seed(s) for s in self.seeds]
        for warp in self.warpers:
            scores = warp(input_ids, scores)
        probs = torch.softmax(scores.float(), dim=-1)
        chosen = torch.cat(
            [torch.multinomial(probs[i], 1, generator=g) for i, g in enumerate(self.generators)]
        )
        only = torch.full_like(scores, float("-inf"))
        only.scatter_(1, chosen[:, None], 0.0)
        return only


def row_sampler(torch: Any, gen_kwargs: dict[str, Any], defaults: Any, seeds: Sequence[int | None]) -> Any:
    """The ``logits_processor`` list that samples row ``i`` from a generator seeded with ``seeds[i]`` (a
    row without a seed gets a random one) under the sampling settings of ``gen_kwargs`` over the model's
    ``generation_config`` (``defaults``)."""
    import transformers

    rows = [s if s is not None else random.randrange(2**63) for s in seeds]
    sampler = _RowSampler(torch, _warpers(transformers, gen_kwargs, defaults), [int(s) for s in rows])
    return transformers.LogitsProcessorList([sampler])
