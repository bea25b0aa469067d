"""The hyperparameter search's machinery: the space, the lockstep oracle and the tracked tuner
(hyperband.py), and the chief, its workers and the handshake between them (distributed.py)."""
