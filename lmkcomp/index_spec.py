"""One vocabulary for nearest-neighbour index specs, in faiss index-factory style, parsed here for
the searchers (`lmkcomp.search`), the centroid index (`lmkcomp.centroid.index`) and the DELF
feature index (`delf_baseline.index`).

A spec is one of:

- a backend name that its user knows, e.g. "flat" (exact search, in all three), "numpy",
  "pq", "pca10-kdtree"; a backend may take an argument after a colon ("torch:cuda");
- where its user builds faiss indexes, a faiss index-factory string, bare or as
  "faiss:FACTORY": "Flat", "IVF1024,Flat", "IVF1024,PQ32", "HNSW32", "PCA64,IVF256,PQ16"...

A bare string is taken as a factory string only when each of its comma-separated parts starts
with one of faiss's factory keywords (`FAISS_KEYWORDS`), so that a typo such as "nunpy" is a
one-line user error listing the known forms rather than faiss's own error from deep inside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from lmkcomp.errors import UserInputError

#: the leading keywords of faiss index-factory components (faiss/index_factory.cpp)
FAISS_KEYWORDS = ("Flat", "IVF", "IMI", "PQ", "OPQ", "HNSW", "NSG", "PCA", "SQ", "LSH", "RFlat", "Refine",
                  "IDMap", "L2norm", "ITQ", "RR", "RQ", "LSQ", "PRQ", "PLSQ", "Pad", "Residual")
FACTORY_EXAMPLES = "Flat, IVF1024,Flat, IVF1024,PQ32, HNSW32"


@dataclass(frozen=True)
class IndexSpec:
    """A parsed spec: `backend` is one of the user's backend names, or "faiss" for a factory
    string; `argument` is what followed "backend:" (or the factory string), else ""."""

    backend: str
    argument: str = ""


def is_faiss_factory(text: str) -> bool:
    """Whether every comma-separated part of `text` starts with a faiss factory keyword."""
    return bool(text) and all(part.startswith(FAISS_KEYWORDS) for part in text.split(","))


def known_forms(backends: Mapping[str, str | None], factory: bool) -> str:
    """The forms a spec may take, for messages: "flat, torch[:DEVICE], or a faiss factory ..."."""
    forms = [name if argument is None else f"{name}[:{argument}]" for name, argument in backends.items()]
    if factory:
        forms.append(f"or a faiss factory string, bare or as faiss:FACTORY ({FACTORY_EXAMPLES}, ...)")
    return ", ".join(forms)


def parse_index_spec(spec: str, backends: Mapping[str, str | None], what: str, factory: bool = True) -> IndexSpec:
    """`spec` parsed against `backends` (name -> the name of the argument it takes after ':',
    e.g. "DEVICE", or None when it takes none) and, when `factory`, faiss factory strings.

    A backend name comes first: "flat" is the backend, "Flat" the faiss factory string. An
    empty spec, an argument for a backend that takes none, or anything else unknown is a
    `UserInputError` naming the spec as `what` (e.g. "searcher spec") and the known forms.
    """
    known = known_forms(backends, factory)
    if not isinstance(spec, str) or not spec.strip():
        raise UserInputError(f"empty {what}; known: {known}")
    name, colon, argument = spec.partition(":")
    if name in backends:
        if colon and backends[name] is None:
            raise UserInputError(f"{what} {spec!r}: the {name} backend takes nothing after ':'")
        return IndexSpec(name, argument)
    if factory:
        if name == "faiss" and colon and argument:
            return IndexSpec("faiss", argument)
        if is_faiss_factory(spec):
            return IndexSpec("faiss", spec)
    raise UserInputError(f"unknown {what} {spec!r}; known: {known}")


def faiss_reason(error: RuntimeError) -> str:
    """faiss's reason for an error, without the C++ function and source line it prefixes."""
    return str(error).strip().splitlines()[-1].rsplit(": ", 1)[-1]
