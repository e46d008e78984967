"""Video data: annotation readers, decoding, sampling, transforms, datasets, synthetic data, optical flow."""
