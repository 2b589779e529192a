"""The experiment log's scripts: measurements that decide what ships, kept
out of the library and the training pipeline. The lever grids and their
tables, the embedder choice, the gate check (issue 31), the unknowns check
(issue 30) and size as evidence (issue 26). docs/ reads their output."""
