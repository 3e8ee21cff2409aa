"""Synthesis: images made from the network by gradient ascent.

- `objectives`: composable scores of hooked activations (channel, class logit, L2,
  feature match, total variation, alpha norm);
- `param`: the image parametrisations (pixels, Fourier with decorrelated colour);
- `transforms`: random jitter/scale/rotation and the Yosinski et al. regularisers;
- `render`: the one optimisation loop (`render`);
- `visualise`: class and unit images (stages ``synthesis_classes``, ``synthesis_units``);
- `inversion`: feature inversion (stage ``synthesis_inversion``);
- `evolution`, `checkpoints`: features across training checkpoints (stage
  ``synthesis_evolution``; the demo training's saved epochs).

Import the modules themselves (``from convscope.synthesis.render import render``); this
package file imports nothing, so the workflow can read `checkpoints` without torch.
"""
