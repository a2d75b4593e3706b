"""Training: the real/bogus Keras model with its custom train step, callbacks and the run driver."""
