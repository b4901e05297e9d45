"""Evaluating an estimator on test samples (DESIGN.md §6): every metric, every method, per sample.

For each test sample the estimator runs on the object image exactly as ``drmnet estimate`` does
(image → observed refmap → ObsNet → DRMNet, N samples). Everything is compared in the camera
frame: the ground-truth envmap is turned by −view_azimuth (:func:`rendering.envmap.rotate_envmap`),
which is the envmap the object's camera saw.

Methods (rows of the tables; :mod:`.methods`):

- ``drmnet``: each metric averaged over the N stochastic samples (what one draw gives);
- ``drmnet_mean``: the per-pixel mean of the N envmaps (and the mean material);
- ``observed_mirror`` (baseline): the observed refmap read as if it were a mirror refmap, its
  holes filled with its mean colour; its material is the mirror z0;
- ``completed_mirror`` (baseline): ObsNet's completion (the mean of the N completions the DRM
  runs started from) read as a mirror refmap; equal to ``observed_mirror`` when every normal
  was observed; material z0;
- ``constant_mean`` (baseline): a constant envmap of the observed refmap's mean colour; its
  material is the prior's mean (0.5 everywhere);
- ``oracle``: the true mirror refmap through the same mirror → envmap conversion, with the true
  material: the floor that the refmap resolution and the conversion leave to every method.

Metrics (columns, :mod:`.scoring`; lower is better unless said):

- three-sphere protocol (:mod:`rendering.spheres`, the sphere's mask) on TONE-MAPPED envmaps
  (:func:`pipeline.metrics.tonemap`: StyleLight's operator, γ = 2.4, the ground truth's 99th
  percentile → 0.99, the estimate scale-aligned to the ground truth over its valid region first):
  ``<sphere>_rmse``, ``<sphere>_si_rmse``, ``<sphere>_nrmse``, ``<sphere>_rel_si_rmse``
  (si-RMSE / RMS(gt)) and ``<sphere>_angular`` (degrees) for the mirror, matte-silver and
  diffuse spheres;
- ``envmap_log_rmse``: scale-aligned, solid-angle weighted, over the valid (determined) region;
- ``refmap_si_rmse``, ``refmap_rel_si_rmse`` and ``refmap_log_lum_rmse``: the (linear) mirror
  refmap against the ground-truth mirror refmap: si-RMSE, si-RMSE / RMS(gt), and the RMSE of
  log luminance after the optimal offset;
- ``material_mae``: mean absolute error of z (measured materials: against their principled fit);
- ``rerender_nrmse``: the observed refmap re-rendered from the estimated envmap and material
  (``render_refmaps``), over the observed pixels;
- ``spread`` and ``calibration`` (``drmnet`` only): how much the N mirror refmaps disagree, and
  the fraction of ground-truth pixels within their mean ± 2 std (higher is better, ≈ 0.95 ideal).

Test sets (:mod:`.test_sets`): ``principled`` (shards of the test split whose material is a
principled z) and ``measured`` (shards of measured materials when the dataset has them, else the
measured test set's own shards: built-in measured-like BRDFs under the test envmaps, on held-out
shapes, rendered by ``drmnet render-dataset --dataset measured --split test``,
:mod:`pipeline.measured_set`). Evaluation renders no test sample itself; each object's shape (for
relighting) is the one its sample stores.

Summary (:func:`.results.summarize`): per group and method, each metric's mean and its median
(``<metric>_median``). Groups: each test set, then ``<test set>/<kind>`` for each kind of
envmap among its samples (the envmaps table's ``kind``: ``real``, ``sky``, ``studio``,
``room``, ``user``), so that real maps, the test that counts, are read apart.

The report's images of each gallery sample: :mod:`.gallery`.
"""
