"""The cascade (detector, then identifier, then the count model) and the
one way to load it from a model folder (``load.load_artifact``)."""
