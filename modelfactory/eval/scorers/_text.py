"""Text normalisation shared by the string scorers (lm-eval's ``ignore_case``, ``ignore_punctuation``,
``regexes_to_ignore``), and the config fields that ask for it."""

from __future__ import annotations

import re
import string

from pydantic import Field, field_validator

from ..score import ScorerConfig

_PUNCT = str.maketrans("", "", string.punctuation)


def compile_regex(pattern: str, flags: int = 0) -> re.Pattern[str]:
    """``re.compile`` with the error pydantic reports under the field's key."""
    try:
        return re.compile(pattern, flags)
    except re.error as exc:
        raise ValueError(f"regex {pattern!r} does not compile: {exc}") from None


class TextConfig(ScorerConfig):
    ignore_case: bool = Field(default=True, description="compare case-insensitively (true/false)")
    strip: bool = Field(default=True, description="strip surrounding whitespace and collapse runs of it")
    ignore_punctuation: bool = Field(default=False, description="drop ASCII punctuation before comparing")
    regexes_to_ignore: list[str] = Field(
        default_factory=list, description="regexes removed from reply and target before comparing"
    )

    @field_validator("regexes_to_ignore")
    @classmethod
    def _compiles(cls, value: list[str]) -> list[str]:
        for pattern in value:
            compile_regex(pattern)
        return value

    def normalize(self, text: str) -> str:
        for pattern in self.regexes_to_ignore:
            text = re.sub(pattern, "", text)
        if self.ignore_punctuation:
            text = text.translate(_PUNCT)
        if self.ignore_case:
            text = text.casefold()
        if self.strip:
            text = " ".join(text.split())
        return text


def one_line(text: str, limit: int = 80) -> str:
    """A reply shown in an explanation: one line, cut at ``limit`` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
