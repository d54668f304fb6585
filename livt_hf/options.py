"""One rule for method-specific options (loss and mixing parameters): none is silently ignored."""

from __future__ import annotations

from collections.abc import Mapping


def resolve_options(
    kind: str, params: Mapping, defaults: Mapping, used_by: Mapping[str, tuple[str, ...]], in_use: set[str], context: str
) -> dict:
    """`defaults` updated with `params`. An unknown name is an error, and so is a value changed from its default when
    nothing in `in_use` reads it (the official LiVT code drops such arguments without a word)."""
    unknown = set(params) - set(defaults)
    if unknown:
        raise ValueError(f"Unknown {kind} parameters {sorted(unknown)}; known: {sorted(defaults)}.")
    for name, value in params.items():
        if value != defaults[name] and not in_use & set(used_by[name]):
            raise ValueError(f"--{name} = {value} has no effect {context}; it applies to {used_by[name]}.")
    return dict(defaults) | dict(params)
