"""Recipes: schema, validation, loader and the bundled recipes."""

__all__: list[str] = []
