"""Training DRMNet (IllNet + RefNet) and ObsNet: the stage (stage.py), the one loop (loop.py) and
what differs per network (families.py), with checkpoints, EMA and multi-process (torchrun) set-up."""
