"""Batch scoring on Ray Data: a ``Dataset`` of ``{prompt, response}`` rows in, the same rows scored out.

``score_dataset`` adds what ``beaverguard score`` adds (``scores``, ``unsafe``,
``flagged`` under the policy), with the same values: each actor of the pool
holds one :class:`~beaverguard.Guard`, so the model is loaded once per actor,
not once per batch, and each row is scored by the guard's batcher exactly as
the local engine scores it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from beaverguard._policy import Policy
from beaverguard._rows import channel_of, scored_fields
from beaverguard._types import Exchange

if TYPE_CHECKING:
    import ray.data

__all__ = ["score_dataset", "ScoreActor", "actor_policy"]


def actor_policy(policy: Policy | None, *, cpus: float, gpus: float) -> Policy:
    """The policy an actor scores under: its scoring sized to the resources Ray reserved for it.

    One worker per reserved CPU (not one per core of the node, which other actors
    share); CUDA and the guard's GPU plan where the actor holds a GPU. What the
    policy sets itself wins.
    """
    policy = policy or Policy()
    ex = policy.execution
    update: dict[str, Any] = {}
    if ex.workers is None and gpus == 0:  # a GPU actor keeps the GPU plan (one worker, batches of 64)
        update["workers"] = max(1, int(cpus))
    if gpus > 0 and ex.provider == "auto":
        update["provider"] = "cuda"
    return policy.model_copy(update={"execution": ex.model_copy(update=update)}) if update else policy


class ScoreActor:
    """One actor of the pool: builds its guard once, then scores batches (``pyarrow.Table`` in and out)."""

    def __init__(self, policy: Policy | None, model: str | None, cpus: float, gpus: float) -> None:
        from beaverguard._guard import Guard

        self.guard = Guard(actor_policy(policy, cpus=cpus, gpus=gpus), model=model)

    def __call__(self, batch: pa.Table) -> pa.Table:
        prompts = batch.column("prompt").to_pylist()
        responses = batch.column("response").to_pylist() if "response" in batch.column_names else [None] * len(prompts)
        channels = batch.column("channel").to_pylist() if "channel" in batch.column_names else [None] * len(prompts)
        channels = [channel_of({"channel": c}) for c in channels]
        exchanges = [Exchange(p, r) for p, r in zip(prompts, responses)]
        fields = [scored_fields(self.guard, e, s, c)
                  for e, s, c in zip(exchanges, self.guard.score_many(exchanges), channels)]
        labels = list(fields[0]["scores"]) if fields else [k for k in self.guard.scorer.labels if k != "unsafe"]
        scores = pa.array([f["scores"] for f in fields], type=pa.struct([(k, pa.float64()) for k in labels]))
        for name, column in (("scores", scores),
                             ("unsafe", pa.array([f["unsafe"] for f in fields], type=pa.float64())),
                             ("flagged", pa.array([f["flagged"] for f in fields], type=pa.bool_())),
                             ("categories", pa.array([f["categories"] for f in fields], type=pa.list_(pa.string()))),
                             ("language", pa.array([f["language"] for f in fields], type=pa.string())),
                             ("unverified", pa.array([f["unverified"] for f in fields], type=pa.bool_()))):
            if name in batch.column_names:  # as the local engine does: a field of that name is replaced
                batch = batch.set_column(batch.column_names.index(name), name, column)
            else:
                batch = batch.append_column(name, column)
        return batch

    def __del__(self) -> None:
        guard = getattr(self, "guard", None)
        if guard is not None:
            guard.close()


def score_dataset(ds: ray.data.Dataset, *, policy: Policy | str | Path | None = None, model: str | Path | None = None,
                  actors: int = 1, cpus_per_actor: float = 1.0, gpus_per_actor: float = 0.0,
                  batch_size: int = 64) -> ray.data.Dataset:
    """Score every row of ``ds`` (a string ``prompt``, an optional string-or-null ``response``).

    Returns a dataset with the rows in their order and three more fields:
    ``scores`` (a struct of each category's score), ``unsafe`` and ``flagged``
    (the policy's action is not allow), the values ``beaverguard score`` writes.
    ``actors`` actors score in parallel, each reserving ``cpus_per_actor`` CPUs and
    ``gpus_per_actor`` GPUs (> 0: onnxruntime on CUDA, which needs onnxruntime-gpu
    on the workers). ``policy`` and ``model`` are as for ``Guard``; a model
    directory must exist at that path on every node (the embedded model always does).
    """
    from beaverguard._yaml import load_policy

    if isinstance(policy, str | Path):
        policy = load_policy(policy)  # read here, on the driver: the workers need not have the file
    from ray.data import ActorPoolStrategy

    out = ds.map_batches(
        ScoreActor, batch_format="pyarrow", batch_size=batch_size, compute=ActorPoolStrategy(size=actors),
        num_cpus=cpus_per_actor, num_gpus=gpus_per_actor or None, udf_modifying_row_count=False,
        fn_constructor_kwargs={"policy": policy, "model": None if model is None else str(model),
                               "cpus": cpus_per_actor, "gpus": gpus_per_actor})
    out.context.execution_options.preserve_order = True  # the rows come out in the order they went in
    return out
