"""Pure maths of HGPrompt (H-score, ensemble H-score, gradient alignment, simplex solver).

Imports neither Ray nor timm: numpy, scipy and torch only.
"""
