"""Quality and speed benchmarks; their results go into BENCHMARKS.md."""
