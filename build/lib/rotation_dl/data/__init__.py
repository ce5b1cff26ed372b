"""Data layer: readers, validation, the canonical store, the sample market and industry bars."""
