"""Where every stage reads and writes, under one root folder.

The root is the repository for ``dvc repro``, a scratch folder per grid point for sweeps, or
``results/<source>`` for a real-data run, so one implementation serves the pipeline, sweeps and tests::

    root/artifacts/data/                           prepared data (+ oracle/ for the simulator)
    root/artifacts/teacher/<variant>/seed_<s>/     state dict, predictions for every impression
    root/artifacts/students/<name>/seed_<s>/       state dict, user and item embeddings
    root/metrics/headline/<model>.json             what ``dvc metrics show`` prints: the headline numbers
    root/metrics/*.json, *.parquet                 every metric, per seed and summarised
    root/plots/*.csv                               data of the interactive ``dvc plots show`` charts
    root/plots/figures/*.png                       every figure of the reports (``dvc plots show`` too)
"""

from __future__ import annotations

from pathlib import Path


class Paths:
    """Every artifact, metrics and plots path of one study run under ``root``."""

    def __init__(self, root: str | Path = "."):
        self.root = Path(root)
        self.artifacts = self.root / "artifacts"
        self.data = self.artifacts / "data"
        self.oracle = self.data / "oracle"
        self.teachers = self.artifacts / "teacher"
        self.students = self.artifacts / "students"
        self.sweeps = self.artifacts / "sweeps"
        self.metrics = self.root / "metrics"
        self.plots = self.root / "plots"
        self.reports = self.root / "reports"

    def teacher(self, variant: str, seed: int) -> Path:
        return self.teachers / variant / f"seed_{seed}"

    def student(self, name: str, seed: int) -> Path:
        return self.students / name / f"seed_{seed}"

    def student_metrics(self, name: str) -> Path:
        return self.metrics / "students" / f"{name}.json"

    def student_curves(self, name: str) -> Path:
        return self.plots / "students" / f"{name}_curves.csv"

    @property
    def headline(self) -> Path:
        """One small JSON per model with its headline numbers: the table ``dvc metrics show`` prints."""
        return self.metrics / "headline"

    @property
    def figures(self) -> Path:
        return self.plots / "figures"

    def figure(self, name: str) -> Path:
        """Where a stage's figure ``name`` is saved (a PNG beside every report figure)."""
        return self.figures / f"{name}.png"
