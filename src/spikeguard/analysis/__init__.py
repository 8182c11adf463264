"""Analyses behind the paper's figures (arXiv 2602.20548, section 4.1, section 5.3 and Figs. 3-5).

* :mod:`.membrane`: pre-spike potential histograms, near-threshold shares and reductions;
* :mod:`.gradients`: input-gradient heatmaps and sparsity metrics;
* :mod:`.landscape`: loss landscapes in parameter space (clean / RFGSM) and along the attack direction;
* :mod:`.flip`: spike-flip probability (closed form vs Monte Carlo) and measured flip rates;
* :mod:`.jacobian`: input-Jacobian norms and the first-order bound;
* :mod:`.sweep`: robust accuracy vs eps and vs lambda_max from evaluation JSONs;
* :mod:`.report`: the self-contained HTML report;
* :mod:`.commands`: one function per ``spikeguard analyze`` sub-command.
"""

from .flip import FlipMeasurement, flip_probability, flip_theory, measure_flip_rates, monte_carlo_flip
from .gradients import gradient_sparsity, input_gradients, sparsity_per_sample
from .jacobian import bound_check, frobenius_norm, jacobian_norms, spectral_norm
from .landscape import Landscape, input_loss_line, landscape_directions, loss_landscape, rfgsm_examples
from .membrane import (
    PotentialHistogram,
    membrane_summary,
    near_threshold_reduction,
    plot_layer_histograms,
    plot_potential_histograms,
    potential_histogram,
)
from .sweep import SweepRecord, load_sweep_records

__all__ = [
    "PotentialHistogram",
    "potential_histogram",
    "plot_potential_histograms",
    "plot_layer_histograms",
    "near_threshold_reduction",
    "membrane_summary",
    "input_gradients",
    "gradient_sparsity",
    "sparsity_per_sample",
    "Landscape",
    "loss_landscape",
    "landscape_directions",
    "input_loss_line",
    "rfgsm_examples",
    "flip_probability",
    "monte_carlo_flip",
    "flip_theory",
    "measure_flip_rates",
    "FlipMeasurement",
    "spectral_norm",
    "frobenius_norm",
    "jacobian_norms",
    "bound_check",
    "SweepRecord",
    "load_sweep_records",
]
