"""The trained testbed: what the demo profile runs on (issue 14), and what the benchmarks
judge GANI with (benchmarks/testbed/).

A StyleGAN2 trained in this repository on procedural faces with known attribute labels
(32 px, style_dim 256; benchmarks/testbed/README.md), its small e4e encoder, one
InterFaceGAN-style direction per attribute, a GANSpace PCA and the attribute regressor that
measures edits. The trained files ship inside the package (``gani/testbed/assets/``, package
data) and are loaded through the checkpoint registry (``testbed-*`` entries of
``gani.checkpoints.registry``, sha256 published and verified at load):

- ``faces``: the procedural faces (``make_face(seed, split, index)`` → image, labels);
- ``attributes``: the attribute regressor's model (``AttributeRegressor``, ``load_regressor``);
- ``directions``: sampling, rendering and measuring edit directions;
- ``edits``: ``EditContext``, the edit measurement (ratio vs generated samples, leakage);
- ``encoder``: loading the testbed e4e and encoding images;
- ``load``: the generator / encoder / regressor / directions from their registry files.

Submodules are imported on demand; nothing heavy here.
"""
