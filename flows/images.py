"""The per-image DAG of one shard, on Prefect futures.

    align -> encode                       per image: `encode.map(align.map(images))`
          -> tune                         batches of tune.batch_size, formed in the order
                                          the encodings finish (`as_completed`)
          -> edit -> evaluate             per image, chained on its batch's tune future
          -> status.json, MLflow child run, `[n/N] id: state`   (the flow, as each ends;
                                          `flows.progress` listeners, the CLI's bar,
                                          show it instead when there are any)

Prefect runs the futures: a task starts when its inputs are final (an upstream future
passed as an argument, or `wait_for`), the flow's ThreadPoolTaskRunner runs at most
orchestration.max_concurrency tasks at once, the tune task holds a slot of the GPU
concurrency limit (`tasks.pipeline.gpu_slot`), and every task retries transient faults
(`tasks.retry`). The shard is submitted whole: what waits in the pool's queue is small
manifests (no tensors), and orchestration.shard_size bounds how many.

What is left to the flow is what Prefect cannot know:
- a task that failed for good fails its image (status.json with `failure_reason(stage,
  exc)`), and the tasks after it in the chain do not run (Prefect: NotReady);
- a tune batch that failed is tried again image by image, so one bad image does not fail
  its batch mates;
- an image that ended is logged to MLflow (unless the tracking server is down:
  `TrackingGuard`), then counted; its progress line follows its child run.

edit takes the image's manifest and reads the tuned result from the image's folder (no
tensors cross a task boundary); `wait_for` is what orders it after its batch's tune.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Optional

from prefect.futures import PrefectFuture, as_completed
from prefect.utilities.annotations import unmapped

from gani.config import Settings
from gani.redact import redact_text
from gani.stages import ImageItem, Layout, finalize
from tasks.pipeline import Tasks
from tasks.retry import failure_reason, is_transient
from tracking import guard_for

from flows import progress

Failure = tuple[str, BaseException]   # (stage, exception) of a task that failed for good


@dataclass
class Chain:
    """One image's task futures in stage order (a tune future is shared by its batch)."""

    item: ImageItem
    steps: list[tuple[str, PrefectFuture]]
    batch_size: int = 1

    @property
    def last(self) -> PrefectFuture:
        return self.steps[-1][1]

    def outcome(self) -> tuple[ImageItem, Optional[Failure]]:
        """The image as its last task returned it, or the first stage that failed."""
        for stage, fut in self.steps:
            exc = failure_of(fut)
            if exc is not None:
                return self.item, (stage, exc)
        return self.last.result(), None


def batches(items: Iterable[ImageItem], size: int) -> Iterator[list[ImageItem]]:
    """`items` in lists of `size` as they come, the last one shorter."""
    batch: list[ImageItem] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def failure_of(fut: PrefectFuture) -> Optional[BaseException]:
    """Why the task run of `fut` did not complete (None when it did)."""
    try:
        fut.wait()
        state = fut.state
    except BaseException as exc:  # noqa: BLE001 - the task engine itself failed
        return exc
    if state.is_completed():
        return None
    exc = state.result(raise_on_failure=False)
    return exc if isinstance(exc, BaseException) else RuntimeError(
        state.message or f"task ended {state.name}")


@dataclass
class ShardRun:
    """The images of one shard through the DAG, and what became of them."""

    tasks: Tasks
    settings: Settings
    output_uri: str
    data_dir: str
    parent_run_id: Optional[str]
    label: str = ""
    total: int = 0
    finished: list[ImageItem] = field(default_factory=list)
    logged: list[str] = field(default_factory=list)
    tracking_failed: list[str] = field(default_factory=list)
    tracking_error: Optional[str] = None   # why the last image was not logged
    t0: float = field(default_factory=time.perf_counter)

    def __post_init__(self):
        self.layout = Layout(self.output_uri)
        self.guard = guard_for(self.settings.tracking.uri)

    # ---------------------------------------------------------------- the DAG

    def run(self, items: list[ImageItem]) -> None:
        """Every image through align -> encode -> tune -> edit -> evaluate, each ended
        (status, MLflow, progress line) as its chain finishes.

        A batch's edit/evaluate are queued after the next batch's tune: the pool takes
        tasks first in, first out, so a free thread takes the next tune before the edits
        that wait for this one, and the GPU does not wait behind them."""
        self.total = len(items)
        chains: list[Chain] = []
        tuning = None
        for batch in batches(self.encoded(items), self.settings.tune.batch_size):
            queued = (batch, self.tune(batch))
            if tuning:
                chains += self.edit_evaluate(*tuning)
            tuning = queued
        if tuning:
            chains += self.edit_evaluate(*tuning)
        alone = self.end_all(chains)
        self.end_all(alone)

    def encoded(self, items: list[ImageItem]) -> Iterator[ImageItem]:
        """align -> encode for every image; yields the images to tune as their encoding
        finishes, and ends the others (quarantined: bad input; failed)."""
        aligned = self.tasks.align.map(items, **self._args(data_dir=False, mapped=True))
        encoded = self.tasks.encode.map(aligned, **self._args(mapped=True))
        fronts = {enc: Chain(item, [("align", al), ("encode", enc)])
                  for item, al, enc in zip(items, aligned, encoded)}
        for fut in as_completed(list(encoded)):
            item, failure = fronts[fut].outcome()
            if failure or item.state != "pending":
                self.end(item, failure)
            else:
                yield item

    def tune(self, batch: list[ImageItem]) -> PrefectFuture:
        return self.tasks.tune.submit(batch, **self._args())

    def edit_evaluate(self, batch: list[ImageItem], tuned: PrefectFuture) -> list[Chain]:
        """edit -> evaluate for each image of a batch, after its tune."""
        chains = []
        for item in batch:
            edited = self.tasks.edit.submit(item, wait_for=[tuned], **self._args())
            evaluated = self.tasks.evaluate.submit(edited, **self._args())
            chains.append(Chain(item, [("tune", tuned), ("edit", edited),
                                       ("evaluate", evaluated)], len(batch)))
        return chains

    def end_all(self, chains: list[Chain]) -> list[Chain]:
        """End each image as its chain finishes. An image whose batch failed to tune is
        submitted again alone (one bad image must not fail its batch mates): returns those
        chains."""
        by_last = {c.last: c for c in chains}
        alone = []
        for fut in as_completed(list(by_last)):
            chain = by_last[fut]
            item, failure = chain.outcome()
            if failure and failure[0] == "tune" and chain.batch_size > 1:
                alone += self.edit_evaluate([chain.item], self.tune([chain.item]))
            else:
                self.end(item, failure)
        return alone

    def _args(self, data_dir: bool = True, mapped: bool = False) -> dict[str, Any]:
        args: dict[str, Any] = {"output_uri": self.output_uri, "settings": self.settings}
        if data_dir:
            args["data_dir"] = self.data_dir
        return {k: unmapped(v) for k, v in args.items()} if mapped else args

    # ---------------------------------------------------------------- the end of an image

    def end(self, item: ImageItem, failure: Optional[Failure] = None) -> None:
        """An image left the DAG: write its status (failures), log it, count it.

        When the output store does not take the status.json (down past the retries), the
        image stays failed (or quarantined) in memory only, is not logged, and the run goes
        on: with no final status on disk the next run redoes it."""
        try:
            item = self._final_status(item, failure)
        except Exception as exc:  # noqa: BLE001 - one image's status must not stop the run
            if item.state not in ("quarantined", "failed"):
                item = item.model_copy(update={"state": "failed", "reason": "storage_error"})
            print(f"warning: could not write the status of {item.image_id} "
                  f"({redact_text(f'{type(exc).__name__}: {exc}')}); it counts as "
                  f"{item.state} in this run "
                  f"and the next run redoes it")
            self._count(item, from_disk=False)
            return
        if self.parent_run_id and self.settings.tracking.enabled:
            self._log(item)
        self._count(item)

    def _final_status(self, item: ImageItem, failure: Optional[Failure]) -> ImageItem:
        if failure is not None:
            stage, exc = failure
            reason = failure_reason(stage, exc)
            item = item.model_copy(update={"state": "failed", "reason": reason})
            return finalize(item, self.layout, "failed", reason,
                            detail=redact_text(f"{type(exc).__name__}: {exc}")[:500])
        if item.state in ("quarantined", "failed"):
            return finalize(item, self.layout)
        return item

    def _log(self, item: ImageItem) -> None:
        """The image's MLflow child run, unless the server is known to be down; a log that
        fails for good on a transient fault trips the guard. Either way the image is listed
        as tracking-failed and reconcile logs it later."""
        if not self.guard.usable():
            self.tracking_failed.append(item.image_id)
            self.tracking_error = self.tracking_error or (
                "MLflow server unreachable (a log task failed; waiting for a health probe)")
            return
        fut = self.tasks.log_image.submit(item=item, output_uri=self.output_uri,
                                          settings=self.settings,
                                          parent_run_id=self.parent_run_id)
        exc = failure_of(fut)
        if exc is None:
            self.guard.succeeded()
            self.logged.append(item.image_id)
            return
        self.tracking_failed.append(item.image_id)
        self.tracking_error = redact_text(f"{type(exc).__name__}: {exc}")[:300]
        if is_transient(exc):
            self.guard.failed()
        print(f"warning: MLflow logging failed for {item.image_id}: {redact_text(exc)}")

    def _count(self, item: ImageItem, from_disk: bool = True) -> None:
        """Count the image with its final state (as status.json says) and print its line."""
        status: dict = {}
        if from_disk:
            try:
                status = self.layout.read_status(item.image_id) or {}
            except Exception as exc:  # noqa: BLE001 - the store is down: keep what we know
                print(f"warning: could not read the status of {item.image_id} "
                      f"({redact_text(f'{type(exc).__name__}: {exc}')}); keeping its state "
                      f"in memory")
                if item.state not in ("done", "quarantined", "failed"):
                    item = item.model_copy(update={"state": "failed",
                                                   "reason": "storage_error"})
        state = status.get("state", item.state)
        reason = status.get("reason") if status else item.reason
        self.finished.append(item.model_copy(update={"state": state, "reason": reason}))
        if progress.image_ended(item.image_id, state, reason, self.label):
            return   # a display (the `gani` command's bar or lines) shows it
        took = time.perf_counter() - self.t0
        print(f"{self.label}[{len(self.finished)}/{self.total}] {item.image_id}: {state}"
              + (f" ({reason})" if reason else "") + f"  ({took:.0f}s elapsed)")

    def report(self, skipped: int) -> dict:
        counts: dict[str, int] = {}
        for item in self.finished:
            counts[item.state] = counts.get(item.state, 0) + 1
        return {"processed": len(self.finished), "skipped": skipped, "counts": counts,
                "logged": sorted(self.logged), "tracking_failed": sorted(self.tracking_failed),
                "tracking_error": self.tracking_error}
