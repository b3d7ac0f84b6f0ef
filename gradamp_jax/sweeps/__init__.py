"""Many runs: the sweep launcher (``launch/sweep.py``), forks, branched sweeps and SLURM.

* :mod:`~gradamp_jax.sweeps.launcher`: ``launch/sweep.py``'s ``main``, which dispatches to
  the modules below; cohorts, trees and segments run as it again, in processes of their own;
* :mod:`~gradamp_jax.sweeps.options`: the launcher's command line, and the command it runs
  itself with;
* :mod:`~gradamp_jax.sweeps.expansion`: a config's ``get_sweep`` into runs (names, workdirs,
  commands, configs); the sweep's record ``ROOT/sweep.json``;
* :mod:`~gradamp_jax.sweeps.local`: commands run here, one after another or several per GPU;
* :mod:`~gradamp_jax.sweeps.cluster`: SLURM jobs through submitit, requeued on preemption;
  sbatch's refusals as one line;
* :mod:`~gradamp_jax.sweeps.cohorts`: ``--cohort K``, runs trained K at a time as one program;
* :mod:`~gradamp_jax.sweeps.branched`: ``--branch``, a sweep trained as trees;
* :mod:`~gradamp_jax.sweeps.branching`: train what runs share once, fork where they part;
* :mod:`~gradamp_jax.sweeps.fork`: start a run from another's checkpoint.
"""
