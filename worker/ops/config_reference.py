"""The configuration reference (a Markdown table) generated from the settings model.

``python -m worker.ops.config_reference`` prints it; the README embeds it
between markers and a test keeps the two identical.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, SecretStr

from worker.config import Settings

START_MARKER = "<!-- config-reference:start -->"
END_MARKER = "<!-- config-reference:end -->"


def _default(field: Any) -> str:
    if field.default_factory is not None:
        if field.default_factory.__name__ == "gethostname":
            return "host name"
        value = field.default_factory()
    else:
        value = field.default
    if isinstance(value, SecretStr):
        return "(development value)"
    if value is None:
        return "unset"
    if isinstance(value, dict):
        return "{}" if not value else str(value)
    return f"`{value}`"


def reference_table() -> str:
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for section_name, section in Settings.model_fields.items():
        model: type[BaseModel] = section.annotation  # type: ignore[assignment]
        for name, field in model.model_fields.items():
            variable = f"SENDGATE_{section_name.upper()}__{name.upper()}"
            description = (field.description or "").replace("|", "\\|").replace("\n", " ")
            rows.append(f"| `{variable}` | {_default(field)} | {description} |")
    return "\n".join(rows)


def embed(readme: str) -> str:
    """``readme`` with the table between the markers replaced by the current one."""
    before, rest = readme.split(START_MARKER, 1)
    _, after = rest.split(END_MARKER, 1)
    return f"{before}{START_MARKER}\n{reference_table()}\n{END_MARKER}{after}"


if __name__ == "__main__":
    print(reference_table())
