"""Ablations: named grids of configurations, a resumable parallel runner, and result tables.

A grid is a list of :class:`Variant` s -- network, learning and run configs derived from base
configs (the ``train`` options) -- and nothing else; :func:`make_grid` builds one:

==================  =====================================================================
``delays``          input delays none / synaptic / axonal, same hidden size
``iso-params``      synaptic and axonal delay models vs weights-only models widened to the
                    same number of learnable parameters (``Network.parameter_counts``)
``fixed-vs-learned``  learned delays; fixed random delays (uniform init, not learned); all
                    fixed at 0; all fixed at the mean of the learned delays of the same seed
``pruning``         synaptic and axonal delay models; after training, delays are set to zero
                    shortest first, longest first and in a random order, in steps of 10 %,
                    with the test accuracy at each step (no retraining)
``sparsity``        input density 1.0, 0.5, 0.2, 0.1, without and with delays
``feedback``        symmetric vs random feedback x online vs accumulate updates
``sigma``           width of the Gaussian delay surrogate, 0.5 / 1 / 2 / 4 steps
==================  =====================================================================

:func:`run_ablation` runs every (variant, seed) of the chosen grids, each in its own folder
``OUT/<grid>/<variant>/seed<s>/`` with the seed ``s = run.seed + k`` (k = 0 .. seeds-1), holding
the :class:`~onlinedelay.train.Trainer` artefacts plus ``result.json`` (and ``pruning.json``).
Then :func:`write_report` writes, into ``OUT``::

    results.csv       one row per run (all grids run in OUT)
    pruning.csv       one row per (run, order, fraction) of the pruning curves
    results.md        per grid: mean ± std over seeds, plots, and the command that reproduces it
    reproduce.sh      those commands
    <grid>/ablation.json, <grid>/base_config.json   what was asked (base configs, seeds, variants)
    <grid>/accuracy.png, delays.png, pruning.png    (matplotlib: ``pip install 'onlinedelay[plots]'``)

Design choices
--------------
* **Resume.** A run whose ``result.json`` matches its configuration (a hash of the network,
  learning and run configs) is skipped; one with a ``checkpoint.h5`` is continued with
  ``Trainer.run(resume=True)``, which ends with exactly the parameters of an uninterrupted run;
  anything else starts afresh.  Re-running the same command after an interruption (Ctrl-C, a
  killed machine) therefore does only the missing work.  Raising ``--epochs`` on a finished
  ablation continues every run from its last checkpoint.
* **Identical runs are trained once.**  ``delays/synaptic``, ``fixed-vs-learned/learned`` and
  ``pruning/synaptic`` are the same training run for a given seed; later copies (in this
  invocation or found finished anywhere under OUT) copy the first one's files instead of
  training again (``reused_from`` in the result).
* **Fixed at the mean.**  ``Trainer`` builds its network from the config and seed, so a run
  whose delays start at a given value is seeded through the resume path: the network is built
  as the trainer would, its input delays set with ``Network.set_delays``, and saved as an
  epoch-0 checkpoint (with a fresh optimizer) that ``Trainer.run(resume=True)`` continues.
  The value is the mean input delay of the ``learned`` variant's ``best.h5`` of the same seed.
* **Evaluation.**  Every number is the accuracy of ``best.h5`` (best validation epoch) on the
  dataset's test split (``--test-dataset FILE`` when ``--dataset`` is a file).
* **Parallelism.**  ``jobs`` worker processes (spawned, one run each at a time); with
  ``scheduler`` the same runs go to a Dask distributed cluster (``pip install
  'onlinedelay[dask]'``; workers must see OUT and the dataset at the same paths, and should run
  one thread each: ``dask worker ADDRESS --nthreads 1 --nworkers N``).  Runs only depend on
  each other for copies and for the fixed-at-mean variant.  Every run is deterministic in its
  seed, so results do not depend on ``jobs`` or the scheduler.

Modules
-------
==============  ===============================================================================
``grids``       the named grids (:data:`GRIDS`: add a grid there), :class:`Variant`, ``iso_hidden``
``plan``        (grid, variant, seed) -> :class:`Task`, identical runs trained once, resume keys
``execute``     one run: train / resume / copy, evaluate, prune (:func:`execute_run`)
``pruning``     pruning curves of a network or saved model
``run``         worker processes or Dask, :func:`run_ablation`, progress lines
``report``      results.csv, pruning.csv, results.md, reproduce.sh, plots
==============  ===============================================================================
"""

from .execute import execute_run
from .grids import DENSITIES, GRID_NAMES, GRID_SUMMARIES, GRIDS, SIGMAS, AblationError, Grid, Variant, \
    dataset_dims, iso_hidden, make_grid
from .plan import Task, plan
from .pruning import PRUNE_FRACTIONS, PRUNE_ORDERS, prune_delays, pruning_curve
from .report import write_report
from .run import format_event, run_ablation, run_tasks

__all__ = ["GRIDS", "GRID_NAMES", "GRID_SUMMARIES", "DENSITIES", "SIGMAS", "PRUNE_FRACTIONS", "PRUNE_ORDERS",
           "AblationError", "Grid", "Variant", "Task", "make_grid", "iso_hidden", "dataset_dims", "plan",
           "run_ablation", "run_tasks", "execute_run", "prune_delays", "pruning_curve", "write_report",
           "format_event"]
