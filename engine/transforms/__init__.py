"""Filters and transforms: what a channel does to a message between the store and its destinations.

``spec`` holds the YAML shape an analyst writes in channels.yaml (``filters``, ``transforms`` and the
top-level ``tables``), checked at config time. ``filters.build_filters`` and
``transforms.build_transforms`` turn checked specs into pipeline stages (``engine.transforms.stages``);
``lookup.load_tables`` reads the lookup tables ``map`` uses; ``inputs.InputFile`` names a file a
configuration read (a CSV table, a ``python:`` module) with its hash, which a reload compares.
Field paths are read and written only through ``engine.hl7.message.Message``.
docs/transforms.md is the analyst's reference.
"""
