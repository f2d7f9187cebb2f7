"""A trained testbed generator (issue 9): procedural faces with attribute labels, a
StyleGAN2 discriminator and training loop for our rosinality-layout Generator, an attribute
regressor, InterFaceGAN/GANSpace directions with measured edit effects, and a Fréchet-distance
sanity figure. The runnable entry points are benchmarks/testbed/{train,evaluate}.py.

Submodules are imported on demand (``from gani.testbed import faces``); nothing heavy here.
"""
