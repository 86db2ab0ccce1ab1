"""GEM (arXiv 2503.22698): not implemented yet; see gem/README.md."""
