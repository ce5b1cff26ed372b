"""rotation_dl."""
