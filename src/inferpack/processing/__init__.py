"""Pre- and post-processing around models (images, text, top-k, pose)."""
