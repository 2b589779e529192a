"""What a sample's frames add up to: sizes, counts and their calibrated
estimates, concentrations, and the EcoTaxa and Darwin Core exports."""
