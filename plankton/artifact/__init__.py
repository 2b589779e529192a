"""The model folder: load and save, the manifest, the card, the gallery,
the taxonomy, the stored validation set, and enrolment of new species."""
