"""pipelines-dagster: a GitOps pipeline for infrastructure-live repositories."""
