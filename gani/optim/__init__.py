"""Optimizers for the GANI modules: Ranger (RAdam + Lookahead + gradient centralisation)."""
from .ranger import Ranger, radam_rectification

__all__ = ["Ranger", "radam_rectification"]
