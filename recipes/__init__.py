"""Precursor library, reaction thermodynamics, initial recipes and active-learning replacement."""
