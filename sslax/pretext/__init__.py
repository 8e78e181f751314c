"""Pure, seeded data transforms of the classic pretext tasks (rotations, jigsaw tiles, patch
pairs, Lab colour bins, inpainting masks) and the k-means behind DeepCluster.

The methods in `sslax/methods/` call these inside the jitted train step; every transform is a
function of its inputs and a `jax.random` key, so it is deterministic given a seed.
"""
