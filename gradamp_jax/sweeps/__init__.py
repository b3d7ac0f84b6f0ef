"""Many runs: the sweep launcher (``launch/sweep.py``), forks, branched sweeps and SLURM.

* :mod:`~gradamp_jax.sweeps.launcher`: a config's ``get_sweep`` into runs, run here, at once
  per GPU, or on SLURM;
* :mod:`~gradamp_jax.sweeps.fork`: start a run from another's checkpoint;
* :mod:`~gradamp_jax.sweeps.branching`: train what runs share once, fork where they part;
* :mod:`~gradamp_jax.sweeps.cluster`: SLURM jobs through submitit, requeued on preemption.
"""
