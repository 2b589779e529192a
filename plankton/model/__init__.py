"""The networks and the decision: detector, embedder, identifier (the
predictors), crops, the detector's gate, and prototypes (the one open-set rule)."""
