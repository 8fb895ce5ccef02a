"""Make sure the raw-data folder ``data/`` tracked by ``data.dvc`` is in place before the pipeline runs.

On a fresh clone with no DVC remote, ``data/`` is absent. When ``data.dvc`` records an empty folder (the
default: the study runs on the embedded simulator), this creates it and lets DVC cache it, so
``dvc status`` is clean. When ``data.dvc`` records files, it tells the user to ``dvc pull`` them instead
of silently replacing their data.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml


def main() -> int:
    dvc_file = Path("data.dvc")
    data = Path("data")
    if not dvc_file.exists():
        print("no data.dvc: nothing to do")
        return 0
    out = yaml.safe_load(dvc_file.read_text())["outs"][0]
    if data.exists() and any(data.iterdir()):
        return 0
    if out.get("nfiles", 0) == 0:
        data.mkdir(exist_ok=True)
        # Same (empty) content as recorded: data.dvc is unchanged, and the empty folder enters the cache.
        subprocess.run([sys.executable, "-m", "dvc", "add", "-q", "data"], check=True)
        return 0
    print(
        f"data.dvc records {out.get('nfiles')} file(s) under data/ that are not here: run `dvc pull data.dvc` "
        "(needs the DVC remote where they were pushed), or set data.source: simulated in params.yaml.",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
