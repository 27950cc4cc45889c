"""Compression techniques, one module each, all of the same shape.

Each module offers a validated ``Config`` dataclass, ``apply(model, data,
config) -> (model, metrics)`` and, where wrappers are involved, ``strip``.
Modules are imported on use so that one technique's dependencies (tfmot,
keras-cv) never slow down another.
"""
