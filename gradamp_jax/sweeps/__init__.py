"""Many runs: the sweep launcher (``launch/sweep.py``), forks, branched sweeps and SLURM.

docs/sweeps.md explains them; docs/architecture.md lists the modules and what each does.
"""
