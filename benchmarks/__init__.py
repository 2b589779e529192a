"""Speed benchmarks, run from a checkout (``python -m benchmarks.speed``);
not part of the installed library."""
