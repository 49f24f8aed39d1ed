"""A PyTorch reference of CWT's PSPNet, support classifier and transformer.

Written from the method's description (PSPNet as in CWT-for-FSS / RePRI, with the
original module names) to check the JAX implementation number for number. Test-only.
"""

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class DeepBaseResNet(nn.Module):
    """ImageNet deep-base ResNet in the resnet50_v2.pth layout."""

    def __init__(self, blocks, width=64, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, 2 * width, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(2 * width)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.inplanes = 2 * width
        self.layer1 = self._make_layer(width, blocks[0])
        self.layer2 = self._make_layer(2 * width, blocks[1], stride=2)
        self.layer3 = self._make_layer(4 * width, blocks[2], stride=2)
        self.layer4 = self._make_layer(8 * width, blocks[3], stride=2)
        self.fc = nn.Linear(32 * width, num_classes)

    def _make_layer(self, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * 4:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * 4, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * 4),
            )
        layers = [Bottleneck(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * 4
        layers += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)


class PSPNet(nn.Module):
    """PSPNet with output stride 8, named as the checkpoints released with CWT and RePRI."""

    def __init__(
        self, blocks, width=64, bottleneck_dim=512, bins=(1, 2, 3, 6), classes=16, resnet=None
    ):
        super().__init__()
        resnet = resnet or DeepBaseResNet(blocks, width)
        self.layer0 = nn.Sequential(
            resnet.conv1,
            resnet.bn1,
            resnet.relu,
            resnet.conv2,
            resnet.bn2,
            resnet.relu,
            resnet.conv3,
            resnet.bn3,
            resnet.relu,
            resnet.maxpool,
        )
        self.layer1, self.layer2 = resnet.layer1, resnet.layer2
        self.layer3, self.layer4 = resnet.layer3, resnet.layer4
        for layer, dilation in ((self.layer3, 2), (self.layer4, 4)):
            for name, module in layer.named_modules():
                if "conv2" in name:
                    module.dilation, module.padding, module.stride = (
                        (dilation, dilation),
                        (dilation, dilation),
                        (1, 1),
                    )
                elif "downsample.0" in name:
                    module.stride = (1, 1)
        channels = 32 * width
        reduction = channels // len(bins)
        self.ppm = nn.Module()
        self.ppm.features = nn.ModuleList(
            nn.Sequential(
                nn.AdaptiveAvgPool2d(b),
                nn.Conv2d(channels, reduction, 1, bias=False),
                nn.BatchNorm2d(reduction),
                nn.ReLU(),
            )
            for b in bins
        )
        self.bottleneck = nn.Sequential(
            nn.Conv2d(2 * channels, bottleneck_dim, 3, padding=1, bias=False),
            nn.BatchNorm2d(bottleneck_dim),
            nn.ReLU(),
            nn.Dropout2d(0.1),
        )
        self.classifier = nn.Conv2d(bottleneck_dim, classes, 1, bias=False)

    def extract_features(self, x):
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.layer0(x)))))
        size = x.shape[2:]
        pyramid = [x] + [
            F.interpolate(f(x), size, mode="bilinear", align_corners=True)
            for f in self.ppm.features
        ]
        return self.bottleneck(torch.cat(pyramid, 1))


class MultiHeadAttentionOne(nn.Module):
    """CWT's transformer: one projection shared by query, key and value."""

    def __init__(self, n_head, d_model, dropout=0.5):
        super().__init__()
        self.n_head, self.d_k = n_head, d_model
        self.w_qkvs = nn.Linear(d_model, n_head * d_model, bias=False)
        nn.init.normal_(self.w_qkvs.weight, 0, np.sqrt(2.0 / (2 * d_model)))
        self.temperature = np.power(d_model, 0.5)
        self.layer_norm = nn.LayerNorm(d_model)
        self.fc = nn.Linear(n_head * d_model, d_model)
        nn.init.xavier_normal_(self.fc.weight)
        self.dropout = nn.Dropout(dropout)

    def forward(self, q, k, v):
        """q: (B, n, C) classifier weights; k, v: (B, C, h, w) feature maps, as CWT's."""
        k, v = (x.view(x.shape[0], x.shape[1], -1).permute(0, 2, 1) for x in (k, v))
        n_head, d_k = self.n_head, self.d_k
        batch, len_q, _ = q.shape
        len_k = k.shape[1]
        residual = q
        q = (
            self.w_qkvs(q)
            .view(batch, len_q, n_head, d_k)
            .permute(2, 0, 1, 3)
            .reshape(-1, len_q, d_k)
        )
        k = (
            self.w_qkvs(k)
            .view(batch, len_k, n_head, d_k)
            .permute(2, 0, 1, 3)
            .reshape(-1, len_k, d_k)
        )
        v = (
            self.w_qkvs(v)
            .view(batch, len_k, n_head, d_k)
            .permute(2, 0, 1, 3)
            .reshape(-1, len_k, d_k)
        )
        attention = torch.softmax(torch.bmm(q, k.transpose(1, 2)) / self.temperature, dim=2)
        output = torch.bmm(attention, v).view(n_head, batch, len_q, d_k)
        output = output.permute(1, 2, 0, 3).reshape(batch, len_q, -1)
        return self.layer_norm(self.dropout(self.fc(output)) + residual)


def randomize_batch_norm(model, generator):
    """Gives every batch norm non-trivial statistics and affine parameters."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
            module.running_var.copy_(0.5 + torch.rand(n, generator=generator))
            module.weight.data.copy_(0.5 + torch.rand(n, generator=generator))
            module.bias.data.copy_(0.1 * torch.randn(n, generator=generator))


def fit_classifier(support_features, support_masks, init_weights, make_optimizer, steps):
    """CWT's inner loop: a 1x1 conv fitted on (K, C, h, w) features and (K, H, W) masks."""
    classifier = nn.Conv2d(support_features.shape[1], 2, 1, bias=False)
    classifier.weight.data.copy_(init_weights[:, :, None, None])
    optimizer = make_optimizer(classifier.parameters())
    background = (support_masks == 0).sum().item()
    foreground = (support_masks == 1).sum().item()
    criterion = nn.CrossEntropyLoss(
        weight=torch.tensor([1.0, background / foreground]), ignore_index=255
    )
    for _ in range(steps):
        logits = F.interpolate(
            classifier(support_features),
            support_masks.shape[-2:],
            mode="bilinear",
            align_corners=True,
        )
        loss = criterion(logits, support_masks)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return classifier.weight.data[:, :, 0, 0]


def metatrain_step_gradients(
    transformer,
    support_features,
    support_masks,
    query_features,
    query_mask,
    init_weights,
    cls_lr,
    adapt_iter,
):
    """One iteration of CWT's `src/train.py` `do_epoch` from frozen features.

    Transcribed from the original: a 1-shot support set is expanded to two copies, the
    support classifier is a bias-free 1x1 conv fitted by `adapt_iter` SGD steps with class
    weights [1, n_bg / n_fg] of the support masks, its `weight.data` goes through the
    transformer with the L2-normalised query features as keys and values, and the query
    loss is weighted by the query mask's counts.

    Args:
      transformer: `MultiHeadAttentionOne`.
      support_features: (K, C, h, w) frozen support features.
      support_masks: (K, H, W) int64 masks in {0, 1, 255}.
      query_features: (1, C, h, w) frozen query features.
      query_mask: (1, H, W) int64 mask.
      init_weights: (2, C) initial classifier weights.
      cls_lr: the inner SGD learning rate.
      adapt_iter: the inner steps.

    Returns:
      The query loss and {parameter name: gradient}.
    """
    s_label = support_masks[None]  # (n_task, n_shots, H, W), as the loader gives it
    shot, channels = support_features.shape[:2]
    if shot == 1:
        f_s = support_features.expand(2, *support_features.shape[1:])
        s_label_reshape = s_label.squeeze(0).expand(2, *s_label.shape[2:]).long()
    else:
        f_s, s_label_reshape = support_features, s_label.squeeze(0).long()
    binary_cls = nn.Conv2d(channels, 2, kernel_size=1, bias=False)
    binary_cls.weight.data.copy_(init_weights[:, :, None, None])
    optimizer = torch.optim.SGD(binary_cls.parameters(), lr=cls_lr)
    s_label_arr = s_label.numpy().copy()
    back_pix, target_pix = np.where(s_label_arr == 0), np.where(s_label_arr == 1)
    criterion = nn.CrossEntropyLoss(
        weight=torch.tensor([1.0, len(back_pix[0]) / len(target_pix[0])]), ignore_index=255
    )
    for _ in range(adapt_iter):
        output_support = F.interpolate(
            binary_cls(f_s), size=s_label.size()[2:], mode="bilinear", align_corners=True
        )
        s_loss = criterion(output_support, s_label_reshape)
        optimizer.zero_grad()
        s_loss.backward()
        optimizer.step()

    q_label_arr = query_mask.numpy().copy()
    q_back_pix, q_target_pix = np.where(q_label_arr == 0), np.where(q_label_arr == 1)
    criterion = nn.CrossEntropyLoss(
        weight=torch.tensor([1.0, len(q_back_pix[0]) / len(q_target_pix[0])]), ignore_index=255
    )
    f_q = F.normalize(query_features, dim=1)
    weights_cls = binary_cls.weight.data
    weights_cls_reshape = weights_cls.squeeze().unsqueeze(0).expand(1, 2, weights_cls.shape[1])
    updated_weights_cls = transformer(weights_cls_reshape, f_q, f_q)
    f_q_reshape = f_q.view(1, channels, -1)
    pred_q = torch.matmul(updated_weights_cls, f_q_reshape).view(1, 2, *f_q.shape[-2:])
    pred_q = F.interpolate(pred_q, size=query_mask.shape[1:], mode="bilinear", align_corners=True)
    loss_q = criterion(pred_q, query_mask.long())
    transformer.zero_grad()
    loss_q.backward()
    return loss_q.item(), {
        name: parameter.grad.clone() for name, parameter in transformer.named_parameters()
    }


class DinoV2(nn.Module):
    """DINOv2's hub ViT (facebookresearch/dinov2, `DinoVisionTransformer` as the hub builds
    it: patch 14, layer scale, qkv bias, LayerNorm eps 1e-6, `block_chunks=0`,
    `interpolate_offset=0.1`, no antialias), with the official state-dict names.

    `forward_features` returns the official `x_norm_patchtokens`.
    """

    def __init__(self, width, depth, registers=0, swiglu=False, grid=37):
        super().__init__()
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, width, 14, stride=14)
        self.cls_token = nn.Parameter(torch.randn(1, 1, width) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + grid * grid, width) * 0.02)
        if registers:
            self.register_tokens = nn.Parameter(torch.randn(1, registers, width) * 0.02)
        self.mask_token = nn.Parameter(torch.zeros(1, width))
        self.blocks = nn.ModuleList(DinoV2Block(width, swiglu) for _ in range(depth))
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.registers, self.grid = registers, grid

    def positions(self, rows, cols):
        if rows * cols == self.grid**2 and rows == cols:
            return self.pos_embed
        patch_pos = self.pos_embed[:, 1:].reshape(1, self.grid, self.grid, -1).permute(0, 3, 1, 2)
        patch_pos = F.interpolate(
            patch_pos,
            scale_factor=((rows + 0.1) / self.grid, (cols + 0.1) / self.grid),
            mode="bicubic",
            antialias=False,
        )
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, rows * cols, -1)
        return torch.cat([self.pos_embed[:, :1], patch_pos], dim=1)

    def forward_features(self, images):
        """(N, 3, H, W) -> (N, H/14 * W/14, width) normalised patch tokens."""
        rows, cols = images.shape[2] // 14, images.shape[3] // 14
        x = self.patch_embed.proj(images).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], dim=1)
        x = x + self.positions(rows, cols)
        if self.registers:
            x = torch.cat([x[:, :1], self.register_tokens.expand(len(x), -1, -1), x[:, 1:]], 1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)[:, 1 + self.registers :]


class DinoV2Block(nn.Module):
    def __init__(self, width, swiglu):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=1e-6)
        self.attn = nn.Module()
        self.attn.qkv = nn.Linear(width, 3 * width)
        self.attn.proj = nn.Linear(width, width)
        self.ls1 = nn.Module()
        self.ls1.gamma = nn.Parameter(1 + 0.1 * torch.randn(width))
        self.norm2 = nn.LayerNorm(width, eps=1e-6)
        self.mlp = nn.Module()
        if swiglu:
            hidden = (int(4 * width * 2 / 3) + 7) // 8 * 8
            self.mlp.w12 = nn.Linear(width, 2 * hidden)
            self.mlp.w3 = nn.Linear(hidden, width)
        else:
            self.mlp.fc1 = nn.Linear(width, 4 * width)
            self.mlp.fc2 = nn.Linear(4 * width, width)
        self.ls2 = nn.Module()
        self.ls2.gamma = nn.Parameter(1 + 0.1 * torch.randn(width))
        self.swiglu, self.heads = swiglu, width // 64

    def attention(self, x):
        batch, tokens, width = x.shape
        qkv = self.attn.qkv(x).reshape(batch, tokens, 3, self.heads, width // self.heads)
        query, key, value = qkv.permute(2, 0, 3, 1, 4)  # each (N, heads, T, C / heads)
        out = F.scaled_dot_product_attention(query, key, value)  # softmax(q k^T / sqrt(d)) v
        out = out.transpose(1, 2).reshape(batch, tokens, width)
        return self.attn.proj(out)

    def ffn(self, x):
        if self.swiglu:
            gate, hidden = self.mlp.w12(x).chunk(2, dim=-1)
            return self.mlp.w3(F.silu(gate) * hidden)
        return self.mlp.fc2(F.gelu(self.mlp.fc1(x)))

    def forward(self, x):
        x = x + self.ls1.gamma * self.attention(self.norm1(x))
        return x + self.ls2.gamma * self.ffn(self.norm2(x))
