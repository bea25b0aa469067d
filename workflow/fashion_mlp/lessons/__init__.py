"""The tutorial's lessons as checked outputs (`fashion-mlp demos`): XOR and the activation functions."""
