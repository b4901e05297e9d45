"""Training loops for DRMNet (IllNet + RefNet) and ObsNet, with their checkpoints, EMA and
multi-process (torchrun) set-up."""
