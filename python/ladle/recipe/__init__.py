"""Recipes: the YAML files that declare a whole fine-tuning run."""

from ladle.recipe.load import json_schema, load_recipe, parse_override, validate_files
from ladle.recipe.schema import (
    DataSection,
    DatasetSpec,
    DedupSpec,
    EvaluateSection,
    GateCondition,
    MetricSpec,
    ModelSection,
    OutputSection,
    Recipe,
    TrainSection,
)

__all__ = [
    "DataSection",
    "DatasetSpec",
    "DedupSpec",
    "EvaluateSection",
    "GateCondition",
    "MetricSpec",
    "ModelSection",
    "OutputSection",
    "Recipe",
    "TrainSection",
    "json_schema",
    "load_recipe",
    "parse_override",
    "validate_files",
]
