"""What a sample's frames add up to: sizes and concentrations, the sample
metadata, and the EcoTaxa and Darwin Core exports."""
