"""PyTorch networks and the diffusion-reflectance-map process. Never imports Mitsuba, so a
trained model runs where Mitsuba is absent."""
