"""The study's stages as functions, one module each, so each stage's code is exactly what it imports.

``prepare`` (data), ``teacher``, ``student`` (one student, every seed) and ``evaluate``: each loads its inputs,
computes and writes its outputs under one root (:class:`dmtl.paths.Paths`). Their order, parameters and
files are the stage table of :mod:`dmtl.dag`, which ``dvc.yaml`` is generated from; a stage's ``dvc.yaml``
dependencies are the modules its notebook imports, so this package's ``__init__`` stays empty.
"""
