"""A PyTorch reference of RePRI's inference, written from the official code. Test-only.

`Classifier` is `src/classifier.py`'s of mboudiaf/RePRI-for-Few-Shot-Segmentation with
what inference uses (`init_prototypes`, `get_logits`, `get_probas`, `compute_FB_param`,
`get_entropies`, `get_ce`, `RePRI`), the Visdom callback and the oracle's noise left out;
`infer` is `src/test.py`'s use of it (feature normalisation, initialisation, inference,
upsampling of the query's logits).
"""

import torch
import torch.nn.functional as F


def to_one_hot(mask, num_classes):
    """`src/util.py`'s, on the CPU: [n_task, shot, h, w] -> [n_task, shot, num_classes, h, w]."""
    n_tasks, shot, h, w = mask.size()
    one_hot_mask = torch.zeros(n_tasks, shot, num_classes, h, w)
    new_mask = mask.unsqueeze(2).clone()
    new_mask[torch.where(new_mask == 255)] = 0
    one_hot_mask.scatter_(2, new_mask, 1).long()
    return one_hot_mask


class Classifier:
    def __init__(self, temperature, adapt_iter, weights, cls_lr, fb_param_update, fb_param_type):
        self.num_classes = 2
        self.temperature = temperature
        self.adapt_iter = adapt_iter
        self.weights = weights
        self.lr = cls_lr
        self.FB_param_update = fb_param_update
        self.FB_param_type = fb_param_type

    def init_prototypes(self, features_s, features_q, gt_s, gt_q):
        n_task, shot, c, h, w = features_s.size()
        ds_gt_s = F.interpolate(gt_s.float(), size=features_s.shape[-2:], mode="nearest")
        ds_gt_s = ds_gt_s.long().unsqueeze(2)
        fg_mask = ds_gt_s == 1
        fg_prototype = (features_s * fg_mask).sum(dim=(1, 3, 4))
        fg_prototype /= fg_mask.sum(dim=(1, 3, 4)) + 1e-10
        self.prototype = fg_prototype
        logits_q = self.get_logits(features_q)
        self.bias = logits_q.mean(dim=(1, 2, 3))

    def get_logits(self, features):
        features = features.permute((0, 1, 3, 4, 2))
        prototype = self.prototype.unsqueeze(1).unsqueeze(2)
        cossim = features.matmul(prototype.unsqueeze(4)).squeeze(4)
        cossim /= (prototype.unsqueeze(3).norm(dim=4) * features.norm(dim=4)) + 1e-10
        return self.temperature * cossim

    def get_probas(self, logits):
        logits_fg = logits - self.bias.unsqueeze(1).unsqueeze(2).unsqueeze(3)
        probas_fg = torch.sigmoid(logits_fg).unsqueeze(2)
        probas_bg = 1 - probas_fg
        return torch.cat([probas_bg, probas_fg], dim=2)

    def compute_FB_param(self, features_q, gt_q):  # noqa: N802 (the official name)
        ds_gt_q = F.interpolate(gt_q.float(), size=features_q.size()[-2:], mode="nearest").long()
        valid_pixels = (ds_gt_q != 255).unsqueeze(2)
        logits_q = self.get_logits(features_q)
        probas = self.get_probas(logits_q).detach()
        self.FB_param = (valid_pixels * probas).sum(dim=(1, 3, 4))
        self.FB_param /= valid_pixels.sum(dim=(1, 3, 4))

    def get_entropies(self, valid_pixels, probas):
        cond_entropy = -((valid_pixels.unsqueeze(2) * (probas * torch.log(probas + 1e-10))).sum(2))
        cond_entropy = cond_entropy.sum(dim=(1, 2, 3))
        cond_entropy /= valid_pixels.sum(dim=(1, 2, 3))
        marginal = (valid_pixels.unsqueeze(2) * probas).sum(dim=(1, 3, 4))
        marginal /= valid_pixels.sum(dim=(1, 2, 3)).unsqueeze(1)
        d_kl = (marginal * torch.log(marginal / (self.FB_param + 1e-10))).sum(1)
        return d_kl, cond_entropy, marginal

    def get_ce(self, probas, valid_pixels, one_hot_gt):
        ce = -((valid_pixels.unsqueeze(2) * (one_hot_gt * torch.log(probas + 1e-10))).sum(2))
        ce = ce.sum(dim=(1, 2, 3))
        ce /= valid_pixels.sum(dim=(1, 2, 3))
        return ce

    def RePRI(self, features_s, features_q, gt_s, gt_q, n_shots):  # noqa: N802
        l1, l2, l3 = self.weights
        l2 = 1 / n_shots if l2 == "auto" else l2 * torch.ones_like(n_shots)
        l3 = 1 / n_shots if l3 == "auto" else l3 * torch.ones_like(n_shots)
        self.prototype.requires_grad_()
        self.bias.requires_grad_()
        optimizer = torch.optim.SGD([self.prototype, self.bias], lr=self.lr)
        ds_gt_q = F.interpolate(gt_q.float(), size=features_s.size()[-2:], mode="nearest").long()
        ds_gt_s = F.interpolate(gt_s.float(), size=features_s.size()[-2:], mode="nearest").long()
        valid_pixels_q = (ds_gt_q != 255).float()
        valid_pixels_s = (ds_gt_s != 255).float()
        one_hot_gt_s = to_one_hot(ds_gt_s, self.num_classes)
        for iteration in range(1, self.adapt_iter):
            logits_s = self.get_logits(features_s)
            logits_q = self.get_logits(features_q)
            proba_q = self.get_probas(logits_q)
            proba_s = self.get_probas(logits_s)
            d_kl, cond_entropy, _ = self.get_entropies(valid_pixels_q, proba_q)
            ce = self.get_ce(proba_s, valid_pixels_s, one_hot_gt_s)
            loss = l1 * ce + l2 * d_kl + l3 * cond_entropy
            optimizer.zero_grad()
            loss.sum(0).backward()
            optimizer.step()
            if (
                (iteration + 1) in self.FB_param_update
                and ("oracle" not in self.FB_param_type)
                and (l2.sum().item() != 0)
            ):
                self.compute_FB_param(features_q, gt_q)
                l2 += 1


def infer(features_s, features_q, gt_s, gt_q, *, norm_feat=True, **settings):
    """`src/test.py`'s inference on a batch of tasks.

    Args:
      features_s: [n_task, shot, c, h, w] support features.
      features_q: [n_task, 1, c, h, w] query features.
      gt_s: [n_task, shot, H, W] support labels.
      gt_q: [n_task, 1, H, W] query labels (their 255 pixels are left out of the query terms).
      norm_feat: `EVALUATION.norm_feat`.
      **settings: `Classifier`'s arguments.

    Returns:
      The fitted prototypes [n_task, c], biases [n_task] and query probabilities
      [n_task, 1, 2, H, W].
    """
    if norm_feat:
        features_s = F.normalize(features_s, dim=2)
        features_q = F.normalize(features_q, dim=2)
    n_shots = torch.full((features_s.shape[0],), float(features_s.shape[1]))
    classifier = Classifier(**settings)
    classifier.init_prototypes(features_s, features_q, gt_s, gt_q)
    classifier.compute_FB_param(features_q=features_q, gt_q=gt_q)
    classifier.RePRI(features_s, features_q, gt_s, gt_q, n_shots)
    logits = classifier.get_logits(features_q)
    logits = F.interpolate(logits, size=gt_q.shape[-2:], mode="bilinear", align_corners=True)
    probas = classifier.get_probas(logits).detach()
    return classifier.prototype.detach(), classifier.bias.detach(), probas


def fit_transductive(
    support_features, support_masks, query_features, init_weights, *, lr, steps, weights, fb
):
    """The transductive objective, as CWT's and RePRI's code would compose it.

    CWT's inner loop (`torch_reference.fit_classifier`: a bias-free 1x1 conv, SGD, the
    supports' cross-entropy weighted [1, n_bg / n_fg] at mask resolution) with RePRI's
    query terms added: `Classifier.get_entropies` of the conv's softmax on every query
    pixel, π from the initial classifier, re-estimated and λ2 raised by 1 after update
    t - 1 for t in `fb`, as `Classifier.RePRI` numbers its updates from 1.

    Args:
      support_features: (K, C, h, w).
      support_masks: (K, H, W) in {0, 1, 255}.
      query_features: (1, C, h, w).
      init_weights: (2, C).
      lr: SGD's learning rate.
      steps: updates.
      weights: (λ1, λ2, λ3), numbers or "auto".
      fb: `FB_param_update`.

    Returns:
      (2, C) fitted weights.
    """
    shot = torch.tensor([float(support_features.shape[0])])
    l1, l2, l3 = (1 / shot if w == "auto" else w * torch.ones_like(shot) for w in weights)
    conv = torch.nn.Conv2d(support_features.shape[1], 2, 1, bias=False)
    conv.weight.data.copy_(init_weights[:, :, None, None])
    optimizer = torch.optim.SGD(conv.parameters(), lr=lr)
    background = (support_masks == 0).sum().item()
    foreground = (support_masks == 1).sum().item()
    criterion = torch.nn.CrossEntropyLoss(
        weight=torch.tensor([1.0, background / foreground]), ignore_index=255
    )
    terms = Classifier(None, None, None, None, fb, "soft")
    valid = torch.ones(1, 1, *query_features.shape[-2:])

    def query_probas():
        return torch.softmax(conv(query_features), dim=1)[:, None]  # [1, 1, 2, h, w]

    with torch.no_grad():
        terms.FB_param = query_probas().sum(dim=(1, 3, 4)) / valid.sum()
    for iteration in range(1, steps + 1):
        logits = F.interpolate(
            conv(support_features), support_masks.shape[-2:], mode="bilinear", align_corners=True
        )
        d_kl, cond_entropy, _ = terms.get_entropies(valid, query_probas())
        loss = l1 * criterion(logits, support_masks) + l2 * d_kl + l3 * cond_entropy
        optimizer.zero_grad()
        loss.sum().backward()
        optimizer.step()
        if (iteration + 1) in fb and l2.sum().item() != 0:
            with torch.no_grad():
                terms.FB_param = query_probas().sum(dim=(1, 3, 4)) / valid.sum()
            l2 += 1
    return conv.weight.data[:, :, 0, 0]
