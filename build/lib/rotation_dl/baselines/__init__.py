"""Rule-based models: diffusion-index rotation, micro-cap timing, the factor IC monitor."""
