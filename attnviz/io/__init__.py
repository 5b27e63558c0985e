"""Files in and out: checkpoints (safetensors, weights-only torch, pickles only with trust), weights sidecars, the
shipped data (demo weights, samples), raw arrays, and the atomic write every file goes through."""
