"""Running the cascade over many frames: inputs, the batch loop, the
resumable journal, the output writers, and the Ray Data engine."""
