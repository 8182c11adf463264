"""Analyses behind the paper's figures."""

from .membrane import PotentialHistogram, plot_potential_histograms, potential_histogram

__all__ = ["PotentialHistogram", "potential_histogram", "plot_potential_histograms"]
