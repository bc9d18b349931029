"""The public API: an explicit, sorted, importable __all__."""

from __future__ import annotations

import specwise


def test_all_is_sorted_and_importable() -> None:
    names = list(specwise.__all__)
    assert names == sorted(names)
    assert len(names) == len(set(names))
    for name in names:
        assert hasattr(specwise, name), name


def test_every_public_callable_is_exported() -> None:
    import specwise.model as model

    for name in model.__all__:
        assert name in specwise.__all__, f"specwise.model.{name} is missing from specwise.__all__"


def test_py_typed_is_shipped() -> None:
    from importlib.resources import files

    assert files("specwise").joinpath("py.typed").is_file()
