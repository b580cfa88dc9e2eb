"""Ray Train worker loops: prompt training and prompt-sharded feature extraction."""
