"""Weights: orbax checkpoints, PyTorch conversion, and the weights a run starts from.

`loading` reads and checks what a run or a prediction starts from; `starting` says which.
"""
