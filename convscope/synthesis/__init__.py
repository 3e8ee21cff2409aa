"""Synthesis: images made from the network.

By gradient ascent through the one render loop:

- `objectives`: composable scores of hooked activations (channel, class logit, L2,
  feature match, total variation, alpha norm);
- `param`: the image parametrisations (pixels, Fourier with decorrelated colour);
- `transforms`: random jitter/scale/rotation and the Yosinski et al. regularisers;
- `render`: the one optimisation loop (`render`);
- `visualise`: class and unit images (stages ``synthesis_classes``, ``synthesis_units``);
- `inversion`: feature inversion (stage ``synthesis_inversion``);
- `evolution`, `checkpoints`: features across training checkpoints (stage
  ``synthesis_evolution``; the demo training's saved epochs).

From images, in the model's 0..1 pixel space (`images.PixelModel`):

- `dream`: deep dream (stage ``synthesis_dream``);
- `style`: Gram matrices, texture synthesis and style transfer (``synthesis_style``);
- `adversarial`: FGSM and the iterative targeted attack (``synthesis_adversarial``);
- `fooling`: images from noise that the model classifies with high confidence
  (``synthesis_fooling``);
- `images`, `outputs`: reading manifest rows as pixels, writing figures, HDF5 and summaries.

Import the modules themselves (``from convscope.synthesis.render import render``); this
package file imports nothing, so the workflow can read `checkpoints` without torch.
"""
