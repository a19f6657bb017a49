"""Helpers of the configuration tests: configuration text parsed, or the problems it has."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from engine.config import Config, parse_config
from engine.errors import ConfigError

#: The sample configuration files.
CONFIGS = Path(__file__).resolve().parent.parent / "samples" / "configs"


def parse(text: str, **kwargs) -> Config:
    """The Config of ``text`` (dedented), as read from channels.yaml; ``kwargs`` go to parse_config."""
    return parse_config(textwrap.dedent(text), "channels.yaml", **kwargs)


def problems(text: str, **kwargs) -> list[tuple[str, int | None, str]]:
    """(path, line, message) of every problem of ``text`` (parse must raise ConfigError)."""
    with pytest.raises(ConfigError) as caught:
        parse(text, **kwargs)
    return [(p.path, p.line, p.message) for p in caught.value.problems]
