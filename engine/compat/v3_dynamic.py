"""V3's typed and dynamic inputs (`io.MatchType`, `io.MultiType`, `io.Autogrow`, `io.DynamicCombo`).

Each schema input gives the V1 inputs it stands for (`v1_entries`) and, before `execute` runs, folds
the flat values back into what the V3 node receives (`nest`), as ComfyUI does:
- `MatchType.Input/Output(template)`: a socket accepting any of the template's types ("IMAGE,MASK";
  "*" when the template allows any).
- `MultiType.Input(id or input, types)`: one socket of several types.
- `Autogrow.Input(id, template)`: inputs `id.<name>` for the template's names (`TemplateNames`) or
  `id.<prefix><i>` (`TemplatePrefix`), the first `min` required; the node gets `id = {name: value}`.
- `DynamicCombo.Input(id, options)`: a combo of the options' keys plus each option's inputs as
  `id.<input>`; the node gets `id = {id: key, <input>: value, ...}` for the chosen option (its
  defaults for inputs not given). Validation is per input, not per option: an input that several
  options share is declared once, with the widest of their ranges.
"""
from __future__ import annotations

from typing import Any

from .v3_io import _Input, _Output


def _socket(types) -> str:
    names = []
    for t in types or ():
        for name in str(getattr(t, "io_type", t)).split(","):
            if name not in names:
                names.append(name)
    return "*" if not names or "*" in names else ",".join(names)


class _Template:
    def __init__(self, template_id: str, allowed_types=None):
        self.template_id = template_id
        self.allowed_types = allowed_types if isinstance(allowed_types, (list, tuple)) or allowed_types is None \
            else [allowed_types]


class MatchType:
    io_type = "COMFY_MATCHTYPE_V3"
    Template = _Template

    class Input(_Input):
        def __init__(self, id: str, template: _Template | None = None, **options):
            super().__init__(id, **options)
            self.io_type = _socket(template.allowed_types if template else None)

    class Output(_Output):
        def __init__(self, template: _Template | None = None, id: str | None = None, **options):
            super().__init__(id, **options)
            self.io_type = _socket(template.allowed_types if template else None)


class MultiType:
    io_type = "COMFY_MULTITYPED_V3"

    class Input(_Input):
        def __init__(self, id_or_input, types: list | None = None, **options):
            if isinstance(id_or_input, _Input):
                base = id_or_input
                super().__init__(base.id, **options)
                self.options = {**base.options, **self.options}
                self.optional = base.optional or self.optional
                types = [base.io_type, *(types or [])]
            else:
                super().__init__(id_or_input, **options)
            self.io_type = _socket(types)


class _Dynamic(_Input):
    """An input standing for several V1 inputs, folded back into one value for `execute`."""

    def v1_entries(self) -> list[tuple[str, str, tuple]]:
        raise NotImplementedError

    def nest(self, values: dict) -> None:
        raise NotImplementedError

    def _flat(self, name: str) -> str:
        return f"{self.id}.{name}"


class Autogrow:
    io_type = "COMFY_AUTOGROW_V3"

    class TemplateNames:
        def __init__(self, input: _Input, names: list[str], min: int = 1):
            self.input, self.names, self.min = input, list(names), min

    class TemplatePrefix:
        def __init__(self, input: _Input, prefix: str, min: int = 1, max: int = 10):
            self.input, self.min = input, min
            self.names = [f"{prefix}{i}" for i in range(max)]

    class Input(_Dynamic):
        def __init__(self, id: str, template, **options):
            super().__init__(id, **options)
            self.template = template

        def v1_entries(self):
            return [("required" if i < self.template.min and not self.optional else "optional",
                     self._flat(name), self.template.input.v1()) for i, name in enumerate(self.template.names)]

        def nest(self, values: dict) -> None:
            values[self.id] = {name: values.pop(self._flat(name)) for name in self.template.names
                               if self._flat(name) in values}


class DynamicCombo:
    io_type = "COMFY_DYNAMICCOMBO_V3"

    class Option:
        def __init__(self, key: str, inputs: list[_Input]):
            self.key, self.inputs = key, list(inputs)

    class Input(_Dynamic):
        def __init__(self, id: str, options: list, **extra):
            super().__init__(id, **extra)
            self.choices = [option.key for option in options]
            self.dynamic_options = list(options)

        def v1_entries(self):
            entries = [("optional" if self.optional else "required", self.id,
                        (list(self.choices), self.options) if self.options else (list(self.choices),))]
            merged: dict[str, tuple] = {}
            for option in self.dynamic_options:
                for entry in option.inputs:
                    spec = entry.v1()
                    if entry.id in merged:
                        spec = _widest(merged[entry.id], spec)
                    merged[entry.id] = spec
            entries += [("optional", self._flat(name), spec) for name, spec in merged.items()]
            return entries

        def nest(self, values: dict) -> None:
            key = values.pop(self.id, None)
            chosen: dict[str, Any] = {self.id: key}
            option = next((o for o in self.dynamic_options if o.key == key), None)
            for entry in option.inputs if option else ():
                if self._flat(entry.id) in values:
                    chosen[entry.id] = values[self._flat(entry.id)]
                elif "default" in entry.options:
                    chosen[entry.id] = entry.options["default"]
            for name in [n for n in values if n.startswith(self.id + ".")]:
                del values[name]
            values[self.id] = chosen


def _widest(first: tuple, second: tuple) -> tuple:
    if len(first) < 2 or len(second) < 2:
        return first
    options = dict(first[1])
    for bound, pick in (("min", min), ("max", max)):
        if bound in options and bound in second[1]:
            options[bound] = pick(options[bound], second[1][bound])
        else:   # unbounded in either: unbounded
            options.pop(bound, None)
    return (first[0], options)


def v1_entries(entry) -> list[tuple[str, str, tuple]]:
    if isinstance(entry, _Dynamic):
        return entry.v1_entries()
    return [("optional" if entry.optional else "required", entry.id, entry.v1())]


def nest_dynamic(inputs: list, values: dict) -> dict:
    for entry in inputs:
        if isinstance(entry, _Dynamic):
            entry.nest(values)
    return values


DYNAMIC_TYPES = {"MatchType": MatchType, "MultiType": MultiType, "Autogrow": Autogrow, "DynamicCombo": DynamicCombo}
