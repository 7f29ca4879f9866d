"""``check-config`` output: the effective configuration as commented YAML, or as JSON.

Secrets are masked (pydantic's ``model_dump(mode="json")`` already masks ``SecretStr``; every
secret option is masked again here so a future secret type cannot slip through).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import yaml

from agent._config.schema import MASK, option_map, section_model

if TYPE_CHECKING:
    from collections.abc import Mapping

    from pydantic import BaseModel

    from agent._config.problems import ConfigProblem, Source

_MAX_WIDTH = 1 << 30


def masked_dump(settings: BaseModel) -> dict[str, Any]:
    """The settings as JSON-ready data, every secret shown as ``**********``."""
    data = settings.model_dump(mode="json")
    for path, option in option_map(type(settings)).items():
        if option.secret:
            *parents, name = path.split(".")
            node = data
            for part in parents:
                node = node[part]
            if node[name] is not None:
                node[name] = MASK
    return data


def flow(value: object) -> str:
    """A value as one line of YAML (flow style), exactly as it would be written in the file."""
    text = yaml.safe_dump(
        [value], default_flow_style=True, width=_MAX_WIDTH, allow_unicode=True, sort_keys=False
    ).strip()[1:-1]  # the list brackets
    # A line break inside a value would end the line early: JSON (valid YAML) keeps it on one.
    return json.dumps(value, ensure_ascii=False) if "\n" in text else text


def render_yaml(settings: BaseModel, sources: Mapping[str, Source], *, digest: str) -> str:
    """Commented YAML: every option, with ``# from <source>`` where it is not the default."""
    lines = [
        "# Effective edge-agent configuration. Precedence: defaults < file < environment < flags.",
        '# No "# from ..." comment: the default. Secrets are shown as **********.',
        f"# config_hash: {digest}",
    ]
    _emit(type(settings), masked_dump(settings), sources, "", lines)
    return "\n".join(lines) + "\n"


def _emit(
    model: type[BaseModel],
    data: Mapping[str, Any],
    sources: Mapping[str, Source],
    prefix: str,
    lines: list[str],
) -> None:
    pad = "  " * prefix.count(".")
    for name, field in model.model_fields.items():
        path = prefix + name
        sub = section_model(field)
        if sub is not None:
            if not prefix:
                lines.append("")
            lines.append(f"{pad}{name}:")
            _emit(sub, data[name], sources, path + ".", lines)
            continue
        line = f"{pad}{name}: {flow(data[name])}"
        source = sources.get(path)
        if source is not None:
            line += f"  # from {source.label}"
        lines.append(line)


def render_json(settings: BaseModel, sources: Mapping[str, Source], *, digest: str) -> str:
    """``{"valid": true, "config_hash", "config", "sources": {path: source}}`` as JSON."""
    document = {
        "valid": True,
        "config_hash": digest,
        "config": masked_dump(settings),
        "sources": {path: source.label for path, source in sources.items()},
    }
    return json.dumps(document, indent=2, ensure_ascii=False)


def render_problems_json(problems: tuple[ConfigProblem, ...]) -> str:
    """``{"valid": false, "errors": [...]}`` as JSON."""
    document = {"valid": False, "errors": [problem.as_dict() for problem in problems]}
    return json.dumps(document, indent=2, ensure_ascii=False)
