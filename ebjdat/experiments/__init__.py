"""Experiments that reproduce the paper's claims on data at hand (``python -m
ebjdat.experiments.<name>``): ``tradeoff``, accuracy, robustness and generation of
standard training, adversarial training, JEM and EB-JDAT side by side."""
