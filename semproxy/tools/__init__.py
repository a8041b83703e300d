"""Maintenance tools that are not part of a run: regenerating the shipped micro ViT weights."""
