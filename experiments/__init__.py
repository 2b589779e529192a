"""The experiment log's scripts: the lever grids, their tables, and the
embedder choice. docs/results.md reads their output."""
