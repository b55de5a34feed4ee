"""ANN-to-SNN conversion: a network of Conv2d / Linear / BatchNorm / ReLU, ReLU6 or QCFS / AvgPool2d /
AdaptiveAvgPool2d / Flatten layers, wired as a chain or with residual additions (ResNet basic and bottleneck blocks,
with or without projection shortcuts), becomes an SNN of integrate-and-fire neurons.

The ANN is traced with ``torch.fx`` (seenn's own networks, ``nn.Sequential``, torchvision-style ResNets and any
module whose forward has no data-dependent control flow), then:

- Every batch norm is folded into the convolution or linear layer before it (exact in eval mode), also inside
  shortcuts; a BN that follows anything else is refused. Dropout and Identity vanish (identities at inference).
- Each activation becomes an IF neuron reset by subtraction with threshold ``theta`` and initial membrane
  ``theta / 2``: ``theta`` is the QCFS clip value ``lam`` (a clip value trained below zero computes
  ``-qcfs_|lam|(-x)``: the neuron then reads the negated input and passes ``-|lam|`` on), a ReLU6 / ``clamp(x, 0, c)``
  / ``hardtanh(x, 0, c)``'s clip ``c`` (exactly what an IF neuron saturates at), or for a plain ReLU a high
  percentile of its activations on calibration data (robust normalisation, Rueckauer et al. 2017).
- Spikes stay binary. A neuron's output stands for ``theta * spikes``: that amplitude multiplies the weights of the
  next convolution or linear layer, passes through pooling and flatten, and where spikes enter a residual sum
  unweighted (an identity shortcut) a constant gain layer (``scale``) carries it. The residual sum feeds the next
  IF neuron as one input current.
- ``AdaptiveAvgPool2d`` becomes the average pool it is at the traced input size; ``torch.flatten(x, 1)``,
  ``x.flatten(1)``, ``x.view(x.size(0), -1)`` and ``x.reshape(x.size(0), -1)`` become a flatten.
- Max pooling is refused: a rate-coded spiking layer has no exact max of rates. Train with average pooling, or
  replace each max pool by the average pool of the same window (:func:`replace_maxpool`) and fine-tune the ANN a
  few epochs before converting.
- The result is a ``sequential`` network when the ANN is a chain and a ``graph`` network otherwise; the stem (the
  chain before the first neuron) is computed once per input, as for every seenn network.

Layers, each importing only those before it: ``graph`` (the trace) -> ``snn`` (``convert``) -> ``bias``
(bias and potential correction) -> ``runs`` (run folders and users' files)."""

from __future__ import annotations

from .bias import correct_biases
from .graph import SUPPORTED_NAMES, ConversionError, read_graph, replace_maxpool
from .runs import calibration_images, convert_file, convert_run, input_layer
from .snn import convert

__all__ = ["SUPPORTED_NAMES", "ConversionError", "calibration_images", "convert", "convert_file", "convert_run",
           "correct_biases", "input_layer", "read_graph", "replace_maxpool"]
