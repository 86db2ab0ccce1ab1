"""INFNet (arXiv 2508.11565): model, baselines, data pipeline, training, evaluation, reproduction, benchmark.

See infnet/README.md for the folder map and the deviations from the paper.
"""
