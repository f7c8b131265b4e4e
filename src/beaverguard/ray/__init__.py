"""beaverguard on Ray (the ``ray`` extra): batch scoring on Ray Data, a shared scoring tier on Ray Serve.

    from beaverguard.ray import score_dataset, score_files
    scored = score_dataset(ray.data.read_parquet("s3://logs/chats/"), actors=8)   # a Dataset in, a Dataset out
    score_files("s3://logs/chats/", "s3://logs/scored/", actors=8)                # resumable, shard by shard

    from beaverguard.ray.serve import scoring_app                                  # the server as a deployment
    serve.run(scoring_app(ServerSettings(...), num_replicas=2))

This package depends on the core, never the other way round: the core imports
it only for ``beaverguard score --engine ray``.
"""

from beaverguard.ray.data import score_dataset
from beaverguard.ray.job import JobResult, score_files

__all__ = ["score_dataset", "score_files", "JobResult"]
