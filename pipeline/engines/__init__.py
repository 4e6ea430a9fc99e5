"""Engines other than DuckDB that run the same `sql/` models (see `pipeline.engines.spark`)."""
