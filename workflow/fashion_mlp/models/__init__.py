"""What a model is and how it is made: the kinds' registry (kinds.py), their architectures,
fitting (schedules, optimizer, augmentation), the training loop shared by train and tune
(training.py), and byte-reproducible saving."""
