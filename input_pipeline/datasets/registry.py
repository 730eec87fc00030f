"""Names of the jaxpose datasets and how to load their TFDS builders.

Each entry maps a dataset name to "module:BuilderClass". Modules are imported
only when used, so a user building one dataset does not import the others.
Builder configs are selected as "name/config" (e.g. "biwi/protocol2").
"""

from __future__ import annotations

import importlib
import os
import pathlib

import tensorflow_datasets as tfds

DATASETS = {
    "synthetic_heads": "input_pipeline.datasets.synthetic_heads:SyntheticHeads",
    "the300w_lp": "input_pipeline.datasets.the300w_lp:The300wLp",
    "aflw2000": "input_pipeline.datasets.aflw2000:Aflw2000",
    "biwi": "input_pipeline.datasets.biwi:Biwi",
    "aflw": "input_pipeline.datasets.aflw:Aflw",
    "afw": "input_pipeline.datasets.afw:Afw",
}

# Where datasets are built unless a command says otherwise.
DEFAULT_DATA_DIR = pathlib.Path(os.environ.get("JAXPOSE_DATA_DIR", pathlib.Path.home() / "jaxpose_data"))


def builder_class(name: str) -> type[tfds.core.GeneratorBasedBuilder]:
    """The builder class of "name" or "name/config"; unknown names list the valid ones."""
    base = name.split("/")[0]
    if base not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}")
    module_name, class_name = DATASETS[base].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def get_builder(name: str, data_dir: str | pathlib.Path | None = None) -> tfds.core.GeneratorBasedBuilder:
    """An instantiated builder for "name" or "name/config" under data_dir."""
    cls = builder_class(name)
    config = name.split("/")[1] if "/" in name else None
    kwargs = {"config": config} if config else {}
    return cls(data_dir=str(data_dir or DEFAULT_DATA_DIR), **kwargs)
