"""The public API documents itself: every public class, function, method and property of the
model (``focalcodec.nn``), of :class:`FocalCodec` and of what ``focalcodec`` exports has a
docstring, and the model's ``forward`` methods and the codec's conversions name shapes."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

import focalcodec
import focalcodec.nn

SHAPE = re.compile(r"\((?:\.\.\.|[A-Z])[^()]*\)")  # (B, T, C), (..., D), (N,)
INHERITED = {"extra_repr"}  # nn.Module's, documented there


def _members(cls: type) -> list[tuple[str, object]]:
    out = []
    for name, value in vars(cls).items():
        if name.startswith("_") or name in INHERITED:
            continue
        fn = value.fget if isinstance(value, property) else getattr(value, "__func__", value)
        if callable(fn):
            out.append((name, fn))
    return out


def undocumented(objects: dict[str, object], shaped: re.Pattern) -> list[str]:
    """Qualified names without a docstring, or without a shape where ``shaped`` matches the name."""
    problems = []
    for qual, obj in objects.items():
        items = [(qual, obj)] + ([(f"{qual}.{n}", f) for n, f in _members(obj)] if inspect.isclass(obj) else [])
        for name, fn in items:
            doc = fn.__doc__ or ""
            if not doc.strip():
                problems.append(f"{name}: no docstring")
            elif shaped.search(name) and not SHAPE.search(doc):
                problems.append(f"{name}: docstring names no shape")
    return problems


def nn_objects() -> dict[str, object]:
    out = {}
    for info in pkgutil.iter_modules(focalcodec.nn.__path__):
        module = importlib.import_module(f"focalcodec.nn.{info.name}")
        assert module.__doc__, f"focalcodec.nn.{info.name} has no module docstring"
        for name, obj in vars(module).items():
            if not name.startswith("_") and getattr(obj, "__module__", None) == module.__name__:
                if inspect.isclass(obj) or inspect.isfunction(obj):
                    out[f"nn.{info.name}.{name}"] = obj
    return out


def test_the_model_documents_every_part_with_shapes() -> None:
    objects = nn_objects()
    assert len(objects) > 30
    problems = undocumented(objects, re.compile(r"\.forward$"))
    assert not problems, "\n".join(problems)


def test_the_public_api_documents_itself() -> None:
    objects = {name: getattr(focalcodec, name) for name in focalcodec.__all__}
    objects = {k: v for k, v in objects.items() if inspect.isclass(v) or inspect.isfunction(v)}
    problems = undocumented(objects, re.compile(r"FocalCodec\.(\w+_to_\w+|forward|encode|decode)$"))
    assert not problems, "\n".join(problems)


def test_the_check_catches_a_missing_docstring_and_a_missing_shape() -> None:
    class Part:
        """A part."""

        def forward(self, x):
            """Runs the part."""

        def helper(self):
            pass

    assert undocumented({"Part": Part}, re.compile(r"\.forward$")) == [
        "Part.forward: docstring names no shape",
        "Part.helper: no docstring",
    ]
