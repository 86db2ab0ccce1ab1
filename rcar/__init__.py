"""RCAR (Diao et al., TIP 2023): plug-and-play regulators for image-text matching; see rcar/README.md."""
