"""The networks and the decision: detector, embedder, identifier, prototypes
(the one open-set rule), and the cascade that composes them."""
