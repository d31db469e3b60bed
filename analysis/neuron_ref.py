"""How a neuron is named everywhere: ``L{layer}/N{neuron}`` (and ``@{position}`` for a
node), written by one function and read back by one parser."""

from __future__ import annotations

import re

from pydantic import BaseModel

from analysis.errors import InputError

_NAME = re.compile(r"L(\d+)\s*/\s*N(\d+)", re.IGNORECASE)


def neuron_name(layer: int, neuron: int) -> str:
    return f"L{layer}/N{neuron}"


def node_name(layer: int, neuron: int, position: int) -> str:
    return f"{neuron_name(layer, neuron)}@{position}"


class NeuronRef(BaseModel):
    layer: int
    neuron: int

    @property
    def name(self) -> str:
        return neuron_name(self.layer, self.neuron)

    @classmethod
    def parse_many(cls, text: str) -> list[NeuronRef]:
        """``"L6/N1284, L8/N787"`` -> two refs, in order, without repeats; anything else
        in the text is refused by name."""
        rest = _NAME.sub("", text).replace(",", " ").strip()
        if rest:
            raise InputError(f"name neurons as L<layer>/N<neuron>, e.g. L6/N1284 (could not "
                             f"read {rest.split()[0]!r})", field="neurons")
        pairs = dict.fromkeys((int(a), int(b)) for a, b in _NAME.findall(text))
        return [cls(layer=layer, neuron=neuron) for layer, neuron in pairs]
