"""Running everything: recipes, `hedit run` and the demo."""
