"""One module per op family; importing this package registers every rule."""

from . import contract, create, elementwise, norms, reduce, route, sdpa, shape  # noqa: F401

__all__: list[str] = []
