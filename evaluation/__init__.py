"""Evaluation models and metrics on top of the world: held-out evaluation of a backbone
(``heldout``: PSNR/SSIM/depth/IoU/Janus against the truth, render snapshots), the CLIP scorer
(``clip``, ``clip_spec``) with the shipped world CLIP in ``assets/`` and its training script
(``train_world_clip``)."""
