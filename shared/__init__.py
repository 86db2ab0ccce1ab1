"""The thin project layer: config, seeding, checkpoints, logging, metrics, distributed, reports."""
