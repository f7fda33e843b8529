"""Configuration errors as one line each: which variable or flag, the value, and what is expected."""

from __future__ import annotations

import re
from collections.abc import Mapping

from pydantic import ValidationError
from pydantic_settings import SettingsError

from service.core.settings import Settings


class ConfigurationError(Exception):
    """A setting or flag the server cannot start with; ``str()`` is the lines to print."""


def env_name(field: str) -> str:
    """The environment variable a setting is read from (``CNN_<FIELD>``, or its alias)."""
    alias = Settings.model_fields[field].validation_alias
    choices = getattr(alias, "choices", ())
    named = [c for c in choices if isinstance(c, str) and c.startswith("CNN_")]
    return named[0] if named else f"CNN_{field.upper()}"


def _expected(message: str) -> str:
    message = re.sub(r"^(Value error|Assertion failed), ", "", message)
    message = re.sub(r"^Input should be", "expected", message)
    message = re.sub(r"^Input should (have|match)", r"expected to \1", message)
    message = re.sub(r"^String should (match|have)", r"expected a string to \1", message)
    message = re.sub(r"^expected (greater|less)", r"expected a number \1", message)
    acronym = message[1:2].isupper()  # URL, JSON: kept as written
    return message if acronym else message[:1].lower() + message[1:]


def describe(exc: ValidationError | SettingsError, values: Mapping[str, str], sources: Mapping[str, str]) -> str:
    """One line per problem. ``values``: the raw text of each variable; ``sources``: the flag a variable
    came from, if it did."""
    if isinstance(exc, SettingsError):
        found = re.search(r'field "(\w+)"', str(exc))
        field = found[1] if found else "?"
        variable = env_name(field) if found else "settings"
        where = sources.get(variable, variable)
        return f"{where}: expected JSON, got {values.get(variable, '')!r}"
    lines = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        variable = env_name(field) if field in Settings.model_fields else "settings"
        where = sources.get(variable, variable)
        lines.append(f"{where}: {_expected(error['msg'])}, got {values.get(variable, error.get('input'))!r}")
    return "\n".join(lines)
