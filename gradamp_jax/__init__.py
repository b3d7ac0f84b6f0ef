"""gradamp_jax: intelligent gradient amplification as composable optax transforms.

Basodi, Pusuluri, Xiao, Pan, "Intelligent gradient amplification for deep neural
networks" (arXiv:2305.18445), and the random-layer amplification of Basodi, Ji, Zhang,
Pan (2020) it builds on.
"""

from gradamp_jax import actions, measures
from gradamp_jax.amplification import (
  AmplificationState,
  AmplifiedOptimizerState,
  amplify,
  check_epoch_start,
  find_state,
  intelligent_amplification,
  random_amplification,
  selection_epochs,
  selection_report,
)
from gradamp_jax.directionality import (
  DirectionalityState,
  directionality_monitor,
  directionality_report,
)
from gradamp_jax.layers import layer_index, layer_names
from gradamp_jax.measures import directionality_g, directionality_g_prime, normalize, select_layers
from gradamp_jax.phases import (
  Phase,
  learning_rate_schedule,
  num_epochs,
  parse_phases,
  steps_per_epoch,
)

__version__ = "0.1.0"

__all__ = [
  "AmplificationState",
  "AmplifiedOptimizerState",
  "DirectionalityState",
  "Phase",
  "actions",
  "amplify",
  "check_epoch_start",
  "directionality_g",
  "directionality_g_prime",
  "directionality_monitor",
  "directionality_report",
  "find_state",
  "intelligent_amplification",
  "layer_index",
  "layer_names",
  "learning_rate_schedule",
  "measures",
  "normalize",
  "num_epochs",
  "parse_phases",
  "random_amplification",
  "select_layers",
  "selection_epochs",
  "selection_report",
  "steps_per_epoch",
]
