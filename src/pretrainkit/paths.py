"""Where the example data lives: --data, else $PRETRAINKIT_DATA, else ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

from pretrainkit.errors import PretrainkitError

ENV = "PRETRAINKIT_DATA"


def candidate_data_dirs() -> list[Path]:
    here = Path(__file__).resolve()
    # ../shared/data beside the checkout (src/pretrainkit/paths.py → repo root is parents[2]).
    return [Path.cwd().parent / "shared" / "data", here.parents[2].parent / "shared" / "data"]


def find_data_dir(
    explicit: str | os.PathLike | None = None, required: tuple[str, ...] = ()
) -> Path:
    """Resolve the data mirror and check that ``required`` sub-paths exist in it."""
    if explicit is not None:
        chosen: Path | None = Path(explicit)
        source = "--data"
    elif os.environ.get(ENV):
        chosen, source = Path(os.environ[ENV]), f"${ENV}"
    else:
        chosen = next((p for p in candidate_data_dirs() if p.is_dir()), None)
        source = "../shared/data"
    if chosen is None or not chosen.is_dir():
        raise PretrainkitError(
            f"no data folder found ({source}: {chosen or 'absent'}). Put the example data "
            f"(sst2/train.tsv and sst2/dev.tsv: 'label<TAB>sentence' rows of SST-2) in a folder "
            f"and pass it with --data DIR or set {ENV}=DIR."
        )
    missing = [r for r in required if not (chosen / r).exists()]
    if missing:
        raise PretrainkitError(f"data folder {chosen} (from {source}) lacks: {', '.join(missing)}")
    return chosen
