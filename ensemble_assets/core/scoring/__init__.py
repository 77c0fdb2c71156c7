"""Scoring new data with a trained model: a target dataset streamed in whole-gene batches through
the one data path, predicted, and written as one Parquet table of calls (docs/scoring.md)."""
