"""Real architectures in plain torch (torchvision does not import beside the CPU torch used here).

ResNet-18 (He et al. 2015) and MobileNetV3-Small (Howard et al. 2019) follow torchvision's layer layout
exactly; the BERT-style encoder comes from a ``transformers.BertConfig`` with random weights. All
weights are random and seeded: these models exercise the compiler, not accuracy.
"""

from __future__ import annotations

import torch
from torch import nn


# ------------------------------------------------------------------------------------------------ ResNet-18
class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + idt)


class ResNet18(nn.Module):
    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        layers, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers.append(nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout)))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# ------------------------------------------------------------------------------------------------ MobileNetV3
def _make_divisible(v: float, divisor: int = 8) -> int:
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class SqueezeExcitation(nn.Module):
    def __init__(self, cin: int, squeeze: int):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(cin, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, cin, 1)
        self.relu = nn.ReLU()
        self.scale_act = nn.Hardsigmoid()

    def forward(self, x):
        s = self.scale_act(self.fc2(self.relu(self.fc1(self.avgpool(x)))))
        return x * s


def _conv_bn_act(cin, cout, k, stride, groups=1, act=nn.Hardswish):
    layers = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, cin, k, exp, cout, use_se, act, stride):
        super().__init__()
        self.use_res = stride == 1 and cin == cout
        layers = []
        if exp != cin:
            layers.append(_conv_bn_act(cin, exp, 1, 1, act=act))
        layers.append(_conv_bn_act(exp, exp, k, stride, groups=exp, act=act))
        if use_se:
            layers.append(SqueezeExcitation(exp, _make_divisible(exp // 4)))
        layers.append(_conv_bn_act(exp, cout, 1, 1, act=None))
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        y = self.block(x)
        return y + x if self.use_res else y


class MobileNetV3Small(nn.Module):
    # (in, kernel, expanded, out, use_se, activation, stride) from the paper's Table 2.
    CONFIG = [
        (16, 3, 16, 16, True, "RE", 2),
        (16, 3, 72, 24, False, "RE", 2),
        (24, 3, 88, 24, False, "RE", 1),
        (24, 5, 96, 40, True, "HS", 2),
        (40, 5, 240, 40, True, "HS", 1),
        (40, 5, 240, 40, True, "HS", 1),
        (40, 5, 120, 48, True, "HS", 1),
        (48, 5, 144, 48, True, "HS", 1),
        (48, 5, 288, 96, True, "HS", 2),
        (96, 5, 576, 96, True, "HS", 1),
        (96, 5, 576, 96, True, "HS", 1),
    ]

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        layers = [_conv_bn_act(3, 16, 3, 2)]
        for cin, k, exp, cout, se, a, s in self.CONFIG:
            layers.append(InvertedResidual(cin, k, exp, cout, se, nn.ReLU if a == "RE" else nn.Hardswish, s))
        layers.append(_conv_bn_act(96, 576, 1, 1))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(576, 1024), nn.Hardswish(), nn.Dropout(0.2), nn.Linear(1024, num_classes)
        )

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


# ------------------------------------------------------------------------------------------------ BERT
class BertEncoder(nn.Module):
    """A BERT-style encoder (transformers' BertModel, eager attention) returning the last hidden state."""

    def __init__(self, hidden: int = 256, layers: int = 4, heads: int = 4, vocab: int = 1000, max_pos: int = 128):
        super().__init__()
        from transformers import BertConfig, BertModel

        cfg = BertConfig(
            vocab_size=vocab,
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=4 * hidden,
            max_position_embeddings=max_pos,
            attn_implementation="eager",
        )
        self.bert = BertModel(cfg, add_pooling_layer=False)
        self.vocab = vocab

    def forward(self, input_ids, attention_mask):
        return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def _randomize_bn(model: nn.Module, seed: int) -> None:
    """BatchNorm statistics away from the (0, 1) defaults, so folding them is actually tested."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def build(name: str, seed: int = 0, image_size: int = 64, seq_len: int = 16):
    """Return ``(module, example_inputs, input_names)`` for an example architecture, seeded."""
    torch.manual_seed(seed)
    if name == "resnet18":
        m = ResNet18()
        _randomize_bn(m, seed)
        return m.eval(), (torch.randn(1, 3, image_size, image_size),), ["image"]
    if name == "mobilenetv3-small":
        m = MobileNetV3Small()
        _randomize_bn(m, seed)
        return m.eval(), (torch.randn(1, 3, image_size, image_size),), ["image"]
    if name == "bert":
        m = BertEncoder().eval()
        ids = torch.randint(0, m.vocab, (1, seq_len))
        mask = torch.ones(1, seq_len, dtype=torch.int64)
        mask[0, seq_len - 3 :] = 0  # some padding, so the mask path is exercised
        return m, (ids, mask), ["input_ids", "attention_mask"]
    raise ValueError(f"unknown example model {name!r}; known: resnet18, mobilenetv3-small, bert")


NAMES = ("resnet18", "mobilenetv3-small", "bert")
