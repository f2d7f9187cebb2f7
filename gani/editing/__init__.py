"""Latent editing: InterFaceGAN directions, GANSpace PCA edits, edit grids
(docs/protocols.md#editing-protocol)."""
from .ganspace import (CARS_GANSPACE_EDITS, DEFAULT_GANSPACE_EDITS, FFHQ_GANSPACE_EDITS,
                       GANSpaceDirection, apply_ganspace, compute_ganspace_pca,
                       edits_for_domain, ganspace_coordinate, ganspace_delta, load_pca,
                       named_edits, validate_pca)
from .grid import Edit, ganspace_edit, interfacegan_edit, render_edit_grid
from .interfacegan import adapt_direction, apply_interfacegan, load_direction

__all__ = [
    "CARS_GANSPACE_EDITS", "DEFAULT_GANSPACE_EDITS", "Edit", "FFHQ_GANSPACE_EDITS",
    "GANSpaceDirection", "adapt_direction", "apply_ganspace", "apply_interfacegan",
    "compute_ganspace_pca", "edits_for_domain", "ganspace_coordinate", "ganspace_delta",
    "ganspace_edit", "interfacegan_edit", "load_direction", "load_pca", "named_edits",
    "render_edit_grid", "validate_pca",
]
