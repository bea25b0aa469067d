"""One module per pipeline stage or command (`fashion-mlp <command>`): flags in, files out.

Each has `build_parser()` and `main(argv)`; the work itself is in the libraries above this folder.
"""
