"""The trained testbed: a StyleGAN2 trained here on procedural faces with known attributes.

Library code in ``benchmarks.testbed.core``; entry points ``python -m benchmarks.testbed.train``,
``.evaluate``, ``.train_encoder`` and ``.judge``. See benchmarks/testbed/README.md.
"""
