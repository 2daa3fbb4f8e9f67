"""Quality gates: facts of each image (perceptual hash, luminance spread, blank) and the
dataset's near-duplicates, computed from pixels the build already decoded."""
