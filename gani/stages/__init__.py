"""Per-image pipeline stages: align -> encode -> tune -> edit -> evaluate, plus planning,
the run summary and the demo dataset. Pure library code (no prefect / mlflow / dvc): the
Prefect tasks in `tasks/` and the DVC stage scripts (`python -m gani.stages`) drive it.
"""
from .align import align_image
from .edit import edit_image
from .encode import encode_image
from .evaluate import evaluate_image, finalize
from .layout import ARTIFACTS, STAGES, Layout
from .plan import (ImageItem, Plan, checkpoint_fingerprints, plan_input, plan_items, result_hash,
                   shards)
from .run import plan, plan_run, run_pipeline, run_stage, summarize_run
from .runtime import Runtime, get_runtime
from .summary import build_summary, image_rows, write_summary
from .tune import tune_batch

__all__ = ["ARTIFACTS", "ImageItem", "Layout", "Plan", "Runtime", "STAGES", "align_image",
           "build_summary", "checkpoint_fingerprints", "edit_image", "encode_image",
           "evaluate_image", "finalize", "get_runtime", "image_rows", "plan", "plan_input",
           "plan_items", "plan_run",
           "result_hash", "run_pipeline", "run_stage", "shards", "summarize_run",
           "tune_batch", "write_summary"]
