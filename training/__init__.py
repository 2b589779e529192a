"""Training scripts. Each has ``main(argv=None)``; run as ``python -m training.NAME``."""
