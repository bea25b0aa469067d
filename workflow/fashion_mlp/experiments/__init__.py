"""Commands that try a change of params.yaml and measure it, beside the pipeline rather than in it:
`preset` (a longer recipe as one DVC experiment, scored on test and recorded), `probe` (a variant of a
preset's model, scored on validation only) and `compare` (did an edit help, model by model).

Each has `build_parser()` and `main(argv)`, as the stages do; neither folder imports the other.
"""
