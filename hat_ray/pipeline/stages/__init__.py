"""The pipeline's stages, one module each, every one with ``run(ctx, done) -> summary``: it reads
the outputs of the stages before it from the run folder (``done``: their summaries), resumes its
own partial work (training checkpoints, the latency journal, the search's evaluation log, one
file per trained / evaluated model) and returns a JSON summary. The report stage is
hat_ray.pipeline.report.

Run folder layout::

    supernet/                 hat-ray train supernet output (checkpoint_last.pt, tb/, ...)
    latency/measured.parquet  rows measured on the cluster's devices
    latency/DEVICE.parquet    rows imported from a device's latency_data file
    latency/DEVICE.npz        the fitted predictor of each device
    search/TARGET/            one search per device and limit (TARGET = DEVICE-LIMIT)
    train/MODEL/              the search winners and baselines, trained (hat-ray train subnet)
    evaluate/MODEL.json       BLEU, validation loss, measured and predicted latency per model
    report.md, *.png          the final report
"""

from hat_ray.pipeline.stages.context import Context

__all__ = ["Context"]
