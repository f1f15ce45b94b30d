"""The configuration reference (docs/configuration.md), generated from the schema:
``python -m mpiml.config > docs/configuration.md``."""

from __future__ import annotations

from dataclasses import fields

import yaml

from .schema import CHOICES, RANGES, SECTIONS, STRICTLY_POSITIVE

_TYPE_WORDS = {"str": "string", "int": "integer", "float": "number", "bool": "true or false",
               "tuple[int, ...]": "list of integers",
               "str | dict": "balanced or a mapping label: weight"}


def reference_markdown() -> str:
    """The configuration reference (docs/configuration.md), generated from the dataclasses."""
    lines = ["# Configuration reference", "",
             "Generated from `mpiml/config/schema.py` by `python -m mpiml.config`; a test",
             "fails when this file is out of date. Unknown keys are rejected with the nearest",
             "valid name.",
             "Override any value on the command line with `--set section.key=value`.", "",
             "Numbers are read as you write them: `1e-3`, `1E6`, `2.5e+3` and `1_000` are",
             "numbers (PyYAML alone, reading YAML 1.1, takes `1e-3` for a string); an integer",
             "setting takes an integral number (`epochs: 1e6`) and refuses `1.5`. The same holds",
             "for `--set` values. A rejected value is named with where it came from: the file and",
             "line (`c.yaml, line 4`) or the `--set` argument.", ""]
    for section, cls in SECTIONS.items():
        lines += [f"## `{section}`", "", cls.__doc__.strip(), "",
                  "| key | default | allowed | meaning |", "|---|---|---|---|"]
        for f in fields(cls):
            allowed = CHOICES.get((section, f.name))
            bounds = RANGES.get((section, f.name))
            if allowed:
                text = ", ".join("null" if c is None else c for c in allowed)
            elif bounds:
                low = "(0" if (section, f.name) in STRICTLY_POSITIVE else f"[{bounds[0]}"
                text = f"{low}, {'inf' if bounds[1] is None else bounds[1]}]"
            else:
                text = _TYPE_WORDS[str(f.type).replace(" | None", "")]
                text += " or null" if "None" in str(f.type) else ""
            default = yaml.safe_dump(f.default, default_flow_style=True).strip()
            default = default.removesuffix("\n...").removesuffix("...").strip()
            lines.append(f"| `{f.name}` | `{default}` | {text} | {f.metadata['doc']} |")
        lines.append("")
    return "\n".join(lines)
