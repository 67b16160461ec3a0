"""Choosing: ``tune`` picks the alpha to ship from a sweep, under capability bounds."""
