"""Per-class attribute descriptors (DCLIP / CuPL JSON, ``{"class": ["descriptor", …]}``) and the
sentences LaZSL encodes: "{class}, which has {descriptor}".

Why here: the published files have defects a loader must survive and report. DCLIP's Food-101 file
has empty lists for some classes; its sentence rule keys on a first *letter* ("a…" → "which is"),
so "angular edges" becomes "which is angular edges". Here the rule reads the first *word*, fixes
"a"/"an" before vowels, and a class without descriptors falls back to its class prompt, by name.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

#: first words after which the descriptor already carries its verb ("has four legs", "can fly")
_VERBS = {"has", "have", "is", "are", "can", "may", "often", "typically", "usually", "sometimes", "with"}
_ARTICLES = {"a", "an", "the"}

#: the embedded benchmark's shapes, described by what the generator draws (paric.data.synthetic)
SHAPE_DESCRIPTORS: dict[str, list[str]] = {
    "circle": ["a round outline", "no corners", "a curved edge", "the same width in every direction"],
    "square": ["four equal straight sides", "four right-angled corners", "a boxy outline"],
    "triangle": ["three straight sides", "three pointed corners", "a wide base and a pointed top"],
    "star": ["five pointed tips", "sharp spikes around a centre", "a spiky outline"],
}


class DescriptorError(ValueError):
    """A descriptor file is not a JSON object of string lists; the message names the file and key."""


def _article(phrase: str) -> str:
    """ "a orange stripe" -> "an orange stripe" (and back): the article agrees with the next word."""
    words = phrase.split()
    if len(words) > 1 and words[0].lower() in ("a", "an"):
        words[0] = "an" if words[1][0].lower() in "aeiou" else "a"
    return " ".join(words)


def sentence(cls: str, descriptor: str) -> str:
    """ "{class}, which {is|has} {descriptor}", the verb chosen by the descriptor's first word."""
    d = _article(descriptor.strip().rstrip("."))
    first = d.split()[0].lower() if d else ""
    if first in _ARTICLES or first.endswith("ed") or first == "used":
        verb = "which is"
    elif first in _VERBS:
        verb = "which"
    else:
        verb = "which has"
    return f"{cls}, {verb} {d}"


@dataclass(frozen=True)
class Descriptors:
    """Each class's sentences, in class order; ``fell_back`` names the classes that had none."""

    sentences: list[list[str]]
    fell_back: list[str]


def build(classes: list[str], table: dict[str, list[str]], class_template: str = "a photo of a {}") -> Descriptors:
    """Sentences for ``classes`` from a ``{class: [descriptor, …]}`` table; names match exactly, else
    case- and underscore-insensitively. A class without descriptors gets its class prompt."""
    norm = {k.lower().replace("_", " "): v for k, v in table.items()}
    out, fell = [], []
    for c in classes:
        ds = table.get(c, norm.get(c.lower().replace("_", " "), []))
        ds = [d for d in ds if d.strip()]
        name = c.replace("_", " ")
        if ds:
            out.append([sentence(name, d) for d in ds])
        else:
            out.append([class_template.format(name)])
            fell.append(c)
    return Descriptors(out, fell)


def load(path: str | Path) -> dict[str, list[str]]:
    """A DCLIP / CuPL descriptor JSON, checked: an object whose values are lists of strings."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        raise DescriptorError(f"{path}: descriptor file not found") from None
    except ValueError as exc:
        raise DescriptorError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise DescriptorError(f"{path}: expected a JSON object {{class: [descriptor, ...]}}, got {type(obj).__name__}")
    for k, v in obj.items():
        if not isinstance(v, list) or not all(isinstance(d, str) for d in v):
            raise DescriptorError(f"{path}: key '{k}': expected a list of descriptor strings, got {v!r:.80}")
    return obj
