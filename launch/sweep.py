"""Expands a config's sweep into runs and launches them (see :mod:`gradamp_jax.sweeps.launcher`).

    python launch/sweep.py --config configs/paper.py --sweep model=resnet18,seeds=3 \
        --root runs/r18-c10 --mode local
"""

from gradamp_jax.sweeps import launcher

if __name__ == "__main__":
  launcher.main()
