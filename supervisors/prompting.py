"""Loads the agents' prompt templates (package data in ``prompts/``) and renders them strictly.

A missing variable is an error, never an empty string (``StrictUndefined``).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import jinja2

PROMPT_VARIABLES: dict[str, frozenset[str]] = {
    "supervisor": frozenset({"service", "max_canary_pct", "min_improvement"}),
    "monitoring": frozenset(),
    "data_steward": frozenset(),
    "continuous_learning": frozenset({"min_improvement"}),
    "deployment": frozenset({"max_canary_pct"}),
    "chat": frozenset({"services"}),
}
"""The variables each prompt needs; rendering checks them."""


@lru_cache(maxsize=1)
def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("prompts", ""),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
    )


def render(role: str, **variables: Any) -> str:
    """Render the prompt of ``role`` with exactly its declared variables.

    Raises:
        KeyError: unknown role.
        ValueError: a declared variable is missing or an undeclared one is given.
    """
    need = PROMPT_VARIABLES[role]
    missing, extra = need - variables.keys(), variables.keys() - need
    if missing or extra:
        raise ValueError(
            f"prompt {role!r} needs variables {sorted(need)}; missing {sorted(missing)}, "
            f"unexpected {sorted(extra)}"
        )
    return _env().get_template(f"{role}.jinja").render(**variables)
