"""Engine: the training loop, validation, prediction over sources, the run folder.

Concern: running a ``models.detector.CenterNet`` over data. ``trainer`` is the loop (Adam, step
drops, AMP, exact resume, DDP) with ``hooks.TrainerHook`` as its one extension mechanism;
``dataset`` feeds it the task's augmented samples and targets; ``evaluate`` validates a network or
checkpoint with the task's metric; ``predict`` and ``sources`` run images, folders and videos;
``run_folder`` owns ``runs/<name>/``; ``outputs`` gives ``predict`` and ``val`` a fresh folder per
run and checked writes, ``command`` the command line the folders record; ``distributed`` wraps DDP. No paper equation lives here: the
losses and decoding are the tasks' (``centernet.tasks``).
"""
