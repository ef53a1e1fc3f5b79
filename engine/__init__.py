"""The DAG engine: node registry, workflow formats, validation, cached executor. No torch, no HTTP."""
