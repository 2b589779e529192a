"""What the model has not seen: unknowns grouped into clusters, contact
sheets, names given to them, and runs compared between model versions."""
