"""The `gani` command (`cli.main:main`): the top layer, above the flows (docs/pipeline.md)."""
