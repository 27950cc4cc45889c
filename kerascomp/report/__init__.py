"""Reports: Markdown tables (:mod:`.tables`) and matplotlib figures on the Agg backend (:mod:`.plots`)."""

from kerascomp.report.plots import (label_lifts, pareto_front, plot_confusion_matrix, plot_epoch_times, plot_layer_errors,
                                    plot_masks, plot_predictions, plot_scored, plot_search, plot_sensitivity, plot_swap, plot_sweep, plot_tradeoff,
                                    plot_training_curves, pyplot, save_figure, technique_plots)
from kerascomp.report.tables import (classification_details, kernel_table, layer_error_table, results_table, scored,
                                     segmentation_details, sensitivity_table)

__all__ = ["pyplot", "save_figure", "results_table", "kernel_table", "plot_tradeoff", "label_lifts", "plot_search",
           "classification_details", "pareto_front", "plot_training_curves", "plot_epoch_times", "plot_confusion_matrix",
           "plot_sweep", "plot_swap", "sensitivity_table", "plot_sensitivity", "technique_plots", "layer_error_table",
           "plot_layer_errors", "plot_predictions", "plot_masks", "segmentation_details", "scored", "plot_scored"]
