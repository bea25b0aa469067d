"""One module per pipeline stage, and `predict`, which puts the champion to work (`fashion-mlp <command>`):
flags in, files out. The commands that try a change beside the pipeline are in experiments/.

Each has `build_parser()` and `main(argv)`; the work itself is in the libraries above this folder.
"""
