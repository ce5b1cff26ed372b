"""Features, labels, normalisation statistics and the panel tensors the GRU trains on."""
