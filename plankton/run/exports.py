"""A finished run's exports (``predict --export``): the run's side of the
``ExportJob``, which only a run has: the frames' files, read again for
their crops, and the concentration rows read back from concentration.csv
so the archive shows the very figures the table does. The formats and
their writers are ``plankton.sample.formats``'."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from plankton.images import ImageError
from plankton.results import FrameResult
from plankton.run.inputs import iter_items, read
from plankton.sample.ecotaxa import object_crop
from plankton.sample.exports import ExportJob, concentration_rows_from_csv, model_label
from plankton.sample import formats


def frame_crops(paths: list[str], frames: dict[str, FrameResult], max_pixels: int | None, quiet: bool = False):
    """``ExportJob.crops`` of a run: each frame with objects read again
    (whichever engine analysed it), in frame order; a frame that no longer
    reads gives its ImageError instead of crops."""

    def crops():
        from tqdm import tqdm

        order = {k: i for i, k in enumerate(sorted(frames, key=lambda k: (frames[k].image, k)))}
        items = sorted((it for it in iter_items(paths) if it.key in order and frames[it.key].objects), key=lambda it: order[it.key])
        for item in tqdm(items, desc="EcoTaxa crops", unit="frame", disable=quiet or len(items) < 2):
            frame = frames[item.key]
            try:
                image = read(item, max_pixels)
            except ImageError as e:
                yield frame, e
                continue
            yield frame, [object_crop(image, o.xyxy) for o in frame.objects]

    return crops


def export(kinds: list[str], out: Path, sample_id: str, paths: list[str], frames: dict[str, FrameResult], sample, meta, taxonomy,
           config: dict, max_pixels: int | None, report: Callable[[str], None], quiet: bool = False) -> None:
    """Each format of ``kinds`` (``--export`` names) into ``out``, in the
    table's order."""
    conc = Path(out) / "concentration.csv"
    rows = concentration_rows_from_csv(conc.read_text(encoding="utf-8")) if sample.volume_ul and conc.is_file() else None
    job = ExportJob(sample_id, tuple(frames[k] for k in sorted(frames, key=lambda k: (frames[k].image, k))), frame_crops(paths, frames, max_pixels, quiet),
                    sample, meta, taxonomy, model_label(config), rows=rows, report=report)
    for fmt in formats.FORMATS:
        if fmt.name in kinds:
            fmt.write_into(out, job)


__all__ = ["export", "frame_crops"]
