"""What each number and method of the report is: the glossary page's entries.

Every page that uses a term links it to ``pages/glossary.html#<anchor>`` through the
``term`` macro (templates/macros.html.j2), and the stage pages link their numbers'
and figures' words with `link_terms`. An anchor named in a template but missing here
fails the build (`anchor`), so no link can point nowhere.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from markupsafe import Markup, escape

__all__ = ["Term", "TERMS", "GROUPS", "anchor", "link_terms"]


@dataclass(frozen=True)
class Term:
    """One glossary entry: its anchor, the words it is shown as, its group and definition."""

    anchor: str
    name: str
    group: str
    definition: str
    aliases: tuple[str, ...] = ()


#: The glossary's sections, in page order.
GROUPS = ("Units", "Embedding and neighbours", "Accuracy", "Attribution methods",
          "Other explanations", "Synthesis")

_U, _E, _A, _M, _X, _S = GROUPS

TERMS: tuple[Term, ...] = (
    Term("unit", "unit (channel)", _U,
         "One channel of an analysed layer's output. Its per-image value is the channel's "
         "spatial maximum over the feature map, unless a number says otherwise."),
    Term("firing-rate", "firing rate", _U,
         "Fraction of all images (0 to 1) on which the unit's spatial maximum is above zero, i.e. "
         "on which a following ReLU lets something through.", ("firing rate",)),
    Term("dead", "dead unit", _U,
         "A unit whose maximum is at most zero on every image of the dataset (firing rate 0). "
         "Only the dataset statistics call a unit dead; a failed optimisation does not.",
         ("dead",)),
    Term("max-activation", "maximum activation", _U,
         "The largest spatial maximum of the unit over the whole dataset, in the layer's own "
         "units (no normalisation).", ("maximum activation",)),
    Term("mean-max", "mean of the per-image maxima", _U,
         "The average over all images of the unit's spatial maximum (same units as the "
         "activation)."),
    Term("preferred-class-mean", "preferred class (highest mean activation)", _U,
         "Among the classes with labelled images, the one whose images have the highest mean "
         "of the unit's per-image maximum (the smallest class id among ties). It summarises "
         "all images of each class.", ("preferred class",)),
    Term("majority-class-topk", "majority class of the top-k", _U,
         "The class that most of the unit's top-k images (the k images with the largest "
         "maximum) belong to, with its count out of k; when several classes share the "
         "highest count there is none (the page says which tie). It describes the unit's "
         "strongest responses only, so it can differ from the preferred class by mean "
         "activation."),
    Term("selectivity", "class selectivity", _U,
         "(mu_pref - mu_rest) / (mu_pref + mu_rest) over the per-class means of the per-image "
         "maximum (Morcos et al. 2018): mu_pref the preferred class's mean, mu_rest the mean "
         "of the other classes' means. 0: no class preferred; 1: fires for one class only.",
         ("class selectivity", "selectivity")),
    Term("receptive-field", "receptive field (RF)", _U,
         "The input pixels that can influence one position of a layer's feature map, from the "
         "network's kernel sizes, strides and padding; the patches are the receptive field "
         "around the position of the unit's maximum. Where it covers the whole image, a patch "
         "is the whole image.", ("receptive field", "RF")),
    Term("top-k", "top-k images", _U,
         "The k images on which the unit's spatial maximum is largest, best first; "
         "their patches are the receptive field around that maximum.", ("top-k",)),
    Term("context", "context crop", _U,
         "The whole image with the receptive field of the maximum drawn as a red box."),
    Term("sparsity", "sparsity", _U,
         "Fraction of (image, unit) pairs of a layer whose maximum is at most zero: the mean "
         "over units of 1 - firing rate.", ("sparsity",)),
    Term("activation-histogram", "activation histogram", _U,
         "How many images (vertical axis) have the unit's per-image maximum in each of equal-"
         "width bins between its smallest and largest value (horizontal axis, activation in "
         "the layer's units)."),
    Term("cnn-code", "CNN code", _E,
         "An image's vector at the codes layer (the input of the classifier by default): "
         "what the embedding and the neighbours compare."),
    Term("tsne", "t-SNE map", _E,
         "A 2-D placement of the CNN codes that keeps images with close codes close on the "
         "map; distances between far-apart groups mean little.", ("t-SNE",)),
    Term("trustworthiness", "trustworthiness", _E,
         "Between 0 and 1 (scikit-learn's trustworthiness): how far the map's nearest "
         "neighbours are also nearest neighbours in code space; 1 = every map neighbour is a "
         "code neighbour.", ("trustworthiness",)),
    Term("knn-accuracy", "k-NN accuracy (leave-one-out)", _E,
         "Each image is classified by the majority label of its k nearest other images "
         "(in code space or pixel space) and compared with its own label; compare it with "
         "the majority-class fraction, the accuracy of always answering the largest class.",
         ("k-NN accuracy",)),
    Term("top1", "top-1 / top-5 accuracy", _A,
         "Fraction of labelled images whose true class is the model's first answer (top-1) or "
         "among its five highest-scoring classes (top-5).", ("top-1", "top-5")),
    Term("wilson", "Wilson 95 % interval", _A,
         "A 95 % confidence interval for a fraction (Wilson score interval; columns _lo and "
         "_hi): two fractions whose intervals overlap cannot be told apart by this data."),
    Term("saliency", "saliency (gradient)", _M,
         "The absolute gradient of the class score with respect to the input pixels "
         "(Simonyan et al. 2014), maximum over colour channels.", ("saliency",)),
    Term("deconvnet", "deconvnet", _M,
         "Gradient of the class score where each ReLU passes back only positive gradients, "
         "whatever its input (Zeiler and Fergus 2014).", ("deconvnet",)),
    Term("guided-backprop", "guided backpropagation", _M,
         "Gradient where each ReLU passes back only positive gradients at positions whose "
         "input was positive (Springenberg et al. 2015).",
         ("guided backprop", "guided_backprop", "guided backpropagation")),
    Term("gradcam", "Grad-CAM", _M,
         "A coarse class map: the chosen layer's feature maps weighted by the spatially "
         "averaged gradient of the class score, summed, ReLU'd and upsampled to the input "
         "(Selvaraju et al. 2017).", ("Grad-CAM", "gradcam")),
    Term("guided-gradcam", "guided Grad-CAM", _M,
         "Guided backpropagation multiplied by the upsampled Grad-CAM map: fine detail only "
         "where the class map is high.", ("guided Grad-CAM", "guided_gradcam")),
    Term("occlusion", "occlusion", _M,
         "The drop in the class probability when a grey square hides each region of the "
         "image in turn (size and stride in pixels as configured).", ("occlusion",)),
    Term("zf-occlusion", "ZF occlusion", _M,
         "Occlusion measured on the total activation of the strongest feature map of the "
         "configured layer instead of the class probability (Zeiler and Fergus 2014).",
         ("zf_occlusion",)),
    Term("reconstruction", "reconstruction (deconvnet projection)", _X,
         "The unit's top activation projected back to pixel space through the network, "
         "showing which input pattern produced it.", ("reconstruction",)),
    Term("invariance", "invariance", _X,
         "How a unit's or the class score's response changes as the image is shifted, "
         "rotated or scaled by increasing amounts."),
    Term("correspondence", "correspondence", _X,
         "Whether code differences between images with and without a part are consistent "
         "across images (compared with random regions)."),
    Term("keypoints", "keypoint matching", _X,
         "How often the nearest feature-map position in another image lands on the same "
         "labelled keypoint."),
    Term("converged", "converged / did not converge", _S,
         "An optimised image's outcome judged on the stored image against a meaningful "
         "reference (a unit image against the unit's best dataset image, a class image "
         "against the target probability...); one that did not converge says nothing about "
         "the unit or class."),
    Term("unit-image", "unit image (activation maximisation)", _S,
         "An input optimised from noise to drive one unit's objective as high as possible."),
    Term("class-model", "class model", _S,
         "An input optimised to maximise one class's score (Simonyan et al. 2014)."),
    Term("inversion", "inversion", _S,
         "An image optimised so that its features at a layer match those of a real image."),
)

_BY_ANCHOR = {t.anchor: t for t in TERMS}


def anchor(name: str) -> str:
    """The glossary anchor ``name``, checked (a template naming an unknown one fails)."""
    if name not in _BY_ANCHOR:
        raise KeyError(f"glossary: no term with anchor {name!r}; known: {', '.join(_BY_ANCHOR)}")
    return name


_ALIASES = sorted(((alias, t.anchor) for t in TERMS for alias in t.aliases),
                  key=lambda pair: -len(pair[0]))
_PATTERN = re.compile(r"(?<![\w/-])(" + "|".join(re.escape(a) for a, _ in _ALIASES) + r")(?![\w/-])")
_ANCHOR_OF = dict(_ALIASES)


def link_terms(text: str, root: str) -> Markup:
    """``text`` escaped, the first use of each glossary word linked to its entry."""
    done: set[str] = set()
    parts, last = [], 0
    for match in _PATTERN.finditer(text):
        target = _ANCHOR_OF[match.group(1)]
        if target in done:
            continue
        done.add(target)
        parts += [escape(text[last:match.start()]),
                  Markup('<a class="term" href="{}pages/glossary.html#{}">{}</a>').format(
                      root, target, match.group(1))]
        last = match.end()
    parts.append(escape(text[last:]))
    return Markup("").join(parts)
