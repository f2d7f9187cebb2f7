"""Prefect tasks: thin wrappers around the library's stages (`tasks.pipeline`) and the MLflow
client (`tasks.tracking`), with one retry policy (`tasks.retry`)."""
from prefect.cache_policies import NO_CACHE

# results stay on disk under the output root (or in MLflow): nothing for Prefect to cache
# or persist
STORED = dict(cache_policy=NO_CACHE, persist_result=False)
