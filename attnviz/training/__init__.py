"""Training: the classifier behind `attnviz fit` and the scaffold it shares with the detector's trainer.

Inference never imports this package."""
