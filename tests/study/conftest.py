"""Fixtures shared by the study tests."""

from ray_head import cluster  # noqa: F401  (a fixture)
