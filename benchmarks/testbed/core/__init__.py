"""The testbed's library (issue 9): procedural faces with attribute labels, a StyleGAN2
discriminator and training loop for our rosinality-layout Generator, an attribute regressor,
InterFaceGAN/GANSpace directions with measured edit effects, a Fréchet-distance sanity figure
and a small e4e encoder. Used by the benchmarks and tests only, not by the product; the
runnable entry points are ``python -m benchmarks.testbed.{train,evaluate,train_encoder,judge}``.

Submodules are imported on demand (``from benchmarks.testbed.core import faces``); nothing
heavy here.
"""
