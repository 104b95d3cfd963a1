"""Receptive fields of modern torchvision networks, derived by hand from their definitions
(torchvision/models/convnext.py, efficientnet.py), analytic and probe."""

import pytest
import torch
import torchvision

from bench.receptive import analyse, gradient_masks

pytestmark = pytest.mark.usefixtures("one_thread")


def chain(layers, size=1, jump=1, start=0):
    """The lab's forward recurrence over (kernel, stride, padding) layers."""
    for kernel, stride, padding in layers:
        size += (kernel - 1) * jump
        start -= padding * jump
        jump *= stride
    return size, jump, start


@pytest.mark.slow
def test_convnext_tiny_by_hand_and_probe():
    # A 4/4/0 stem, then stages of 3, 3, 9, 3 blocks, each a 7x7 depthwise convolution
    # (padding 3) between channel-wise LayerNorm and Linear layers in channels-last order,
    # and a 2/2/0 downsampling convolution before stages 2-4.
    with torch.device("meta"):
        model = torchvision.models.convnext_tiny()
    path = [(4, 4, 0)]
    for stage, blocks in enumerate((3, 3, 9, 3)):
        path += [(2, 2, 0)] if stage else []
        path += [(7, 1, 3)] * blocks
    assert chain(path) == (1688, 32, -828)
    analysis = analyse(model, (3, 224, 224))
    assert analysis.channel_safe  # the permutes move channels, they do not select them
    for name in ("features.7.2.block.0", "features.7.2.block.3", "features.7.2.block.5"):
        layer = analysis.layer(name)
        assert (layer.rf, layer.jump, layer.start) == ([1688] * 2, [32] * 2, [-828] * 2), name
    chosen = ["features.0.0", "features.3.2.block.0", "features.7.2.block.5", "classifier.2"]
    masks = gradient_masks(model, analysis, [analysis.layer(name) for name in chosen])
    assert all(mask.matches() for mask in masks.values())
    last = masks["features.7.2.block.5"]
    assert not last.clipped and last.measured() == [{"size": 1688, "jump": 32, "start": -828}] * 2


@pytest.mark.slow
def test_efficientnet_b0_is_global_after_its_first_squeeze_and_excitation():
    with torch.device("meta"):
        model = torchvision.models.efficientnet_b0()
    analysis = analyse(model, (3, 224, 224))
    # A 3/2/1 stem, then the first block's 3x3 depthwise convolution (padding 1).
    first = analysis.layer("features.1.0.block.0.0")
    assert (
        (first.rf, first.jump, first.start)
        == ([7, 7], [2, 2], [-3, -3])
        == ([chain([(3, 2, 1), (3, 1, 1)])[0]] * 2, [2, 2], [-3, -3])
    )
    # Its squeeze-and-excitation gate is computed from the whole map and multiplies every unit.
    assert analysis.layer("features.1.0.block.2.0").rf == "global"
    assert analysis.layer("features.8.0").rf == "global"
    assert any("squeeze-and-excitation" in note for note in analysis.notes)
    chosen = [analysis.layer(name) for name in ("features.1.0.block.0.0", "features.1.0.block.2.0", "features.8.0")]
    masks = gradient_masks(model, analysis, chosen)
    assert all(mask.matches() for mask in masks.values())
    assert masks["features.8.0"].centre_boxes == ((0, 223), (0, 223))
