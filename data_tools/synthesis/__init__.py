"""The parts of ``rsmatch-synthesize`` (:mod:`data_tools.synthesize`, the driver and command line).

- :mod:`.models`: finding and loading the two models (the T5 prompt model, the
  diffusers text-to-image pipeline), offline-safe;
- :mod:`.prompts`: prompts per class (T5 sampling or templates) and ``prompts.json``;
- :mod:`.rendering`: what each image is (prompt, seed) and the pipeline calls that render it;
- :mod:`.output`: the output folder (images, manifest, settings; resuming and ``--overwrite``);
- :mod:`.seeds`: every image's and T5 call's own seed.
"""
