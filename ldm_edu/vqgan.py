"""The first-stage recipe of VQGAN and LDM (Esser et al. 2021; Rombach et al. 2022; seed paper §2.1–2.2):
reconstruction + perceptual + PatchGAN adversarial loss, with VQGAN's adaptive weight.

An autoencoder trained on ‖x − x̂‖² alone is blurry: where it is unsure it predicts the average of
the plausible images (seed paper §2.1: "reconstructed images had some blurriness, typical of the
L2 loss"). The recipe adds two terms that reward what the eye notices (seed paper §2.2, items 1–2):

1. a **perceptual loss** — the distance between images in the feature space of a fixed conv net
   (LPIPS, Zhang et al. 2018, uses VGG features);
2. an **adversarial loss** — a PatchGAN discriminator D (Isola et al. 2017) scores every patch of
   x̂ as real or fake; the autoencoder is pushed towards patches D cannot tell from real ones.

Losses (Esser et al. 2021 eq. 4–7, in the hinge form of their code):

    L_rec = Σ_pixels |x − x̂| + w_p · P(x, x̂) · (#pixels)              (per image, mean over batch)
    L_GAN = −E[D(x̂)]                                                     (generator side)
    L_D   = ½ (E[max(0, 1 − D(x))] + E[max(0, 1 + D(x̂))])              (discriminator side)
    L     = L_rec + w_d · λ · L_GAN (+ the first stage's KL or VQ term),
    λ     = ‖∇_{G_L} L_rec‖ / (‖∇_{G_L} L_GAN‖ + δ), clamped to [0, 10⁴] (Esser et al. eq. 7; the clamp
            and δ = 10⁻⁴ are taming-transformers' code, the paper writes δ = 10⁻⁶; w_d = ``disc_weight``,
            0.5 in LDM's KL-f configs)

where G_L is the weight of the decoder's last layer: λ rescales the adversarial gradient to the
size of the reconstruction gradient at the output (w_d times it), whatever their raw scales. L_GAN is switched
on only after ``disc_start`` steps (the warm-up): a discriminator facing a random decoder wins
at once and its gradient is noise.

**Which network plays LPIPS's role.** FID-MNIST is measured with the shipped MNIST classifier, so
that classifier must not appear in the loss — otherwise the model would be optimised against
the metric. We use ``RandomFeatureNet``: a small conv net with **fixed random weights**, never
trained (He, Wang & Hopcroft 2016 synthesised textures from an untrained VGG; random conv
features still respond to edges, strokes and their positions). It knows nothing about digit
classes, costs nothing to train, and is rebuilt bit for bit from its seed.
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from .nn import check_image_batch


# ----------------------------------------------------------------------------- perceptual distance
class RandomFeatureNet(nn.Module):
    """The perceptual network: conv3×3-ReLU stacks at 28², 14² and 7² with frozen random weights.

    ``distance(x, y)`` is LPIPS's formula (Zhang et al. 2018 eq. 1) with channel weights w_l = 1 (LPIPS
    learns w_l on human similarity judgements, and Zhang et al. found random-weight networks much
    weaker perceptual metrics than trained ones — lesson 07 measures whether this one helps):
    per layer l, unit-normalise each position's feature vector over channels, take the squared
    difference, average over positions; sum over layers → one value per image, shape (B,).
    Inputs: images in [−1, 1], (B, 1, 28, 28)."""

    def __init__(self, widths: tuple = (16, 32, 64), seed: int = 1234):
        super().__init__()
        self.config = {"widths": tuple(widths), "seed": seed}
        stages, c = [], 1
        for i, w in enumerate(widths):
            layers = [nn.AvgPool2d(2)] if i else []
            layers += [nn.Conv2d(c, w, 3, padding=1), nn.ReLU(), nn.Conv2d(w, w, 3, padding=1), nn.ReLU()]
            stages.append(nn.Sequential(*layers))
            c = w
        self.stages = nn.ModuleList(stages)
        g = torch.Generator().manual_seed(seed)                # the same "network" on every machine
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
                with torch.no_grad():
                    m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
                    m.bias.zero_()
        self.requires_grad_(False).eval()

    def train(self, mode: bool = True):                        # always frozen, always eval
        return super().train(False)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats

    def distance(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Σ_l mean_{h,w} ‖f̂_l(x) − f̂_l(y)‖², f̂ = f / ‖f‖ over channels (LPIPS, uniform weights) → (B,)."""
        total = 0.0
        for fx, fy in zip(self.features(x), self.features(y)):
            # 1. unit-normalise every position's feature vector over channels
            fx = fx / (fx.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            fy = fy / (fy.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            # 2. squared distance per position, averaged over positions
            total = total + (fx - fy).pow(2).sum(1).mean((1, 2))
        return total

    forward = distance


# ----------------------------------------------------------------------------- PatchGAN discriminator
class PatchDiscriminator(nn.Module):
    """PatchGAN (Isola et al. 2017; the ``NLayerDiscriminator`` of pix2pix and taming-transformers) in
    miniature: conv4×4 stride 2 → LeakyReLU(0.2), then ``n_layers − 1`` conv4×4 stride 2 → BatchNorm
    → LeakyReLU, one stride-1 block, and a conv to one logit per patch.

    Receptive field of one logit (r ← r + (k − 1)·j, j the product of the strides before the layer):
    n_layers = 1: 4 → 10 → 16 px, on 28 × 28 a 12 × 12 map of logits (28 → 14 → 13 → 12);
    n_layers = 2: 4 → 10 → 22 → 34 px — wider than a 28 × 28 digit, so every "patch" sees the whole
    image (28 → 14 → 7 → 6 → 5); n_layers = 3: 70 px, taming-transformers' classic PatchGAN on 256².
    ``measured_receptive_field`` measures it from the gradient."""

    def __init__(self, ch: int = 32, n_layers: int = 2):
        super().__init__()
        if n_layers < 1 or ch < 1:
            raise ValueError(f"PatchDiscriminator needs ch ≥ 1 and n_layers ≥ 1, got ch={ch}, n_layers={n_layers}")
        self.config = {"ch": ch, "n_layers": n_layers}
        layers = [nn.Conv2d(1, ch, 4, 2, 1), nn.LeakyReLU(0.2)]
        c = ch
        for i in range(1, n_layers + 1):
            out = ch * min(2 ** i, 8)
            stride = 2 if i < n_layers else 1
            layers += [nn.Conv2d(c, out, 4, stride, 1, bias=False), nn.BatchNorm2d(out), nn.LeakyReLU(0.2)]
            c = out
        layers.append(nn.Conv2d(c, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)
        for m in self.modules():                               # pix2pix / taming initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_batch(x, 1, name="PatchDiscriminator input")
        return self.net(x)


def measured_receptive_field(disc: nn.Module, size: int = 96) -> int:
    """The receptive field of one logit of ``disc``, measured: the side of the smallest square holding
    every input pixel that the gradient of the centre logit (on a random ``size`` × ``size`` image, eval
    mode) reaches. Equal to the layer arithmetic when no weight is exactly zero."""
    was_training = disc.training
    disc.eval()
    x = torch.randn(1, 1, size, size, generator=torch.Generator().manual_seed(0), requires_grad=True)
    out = disc(x)
    h, w = out.shape[-2:]
    g, = torch.autograd.grad(out[0, 0, h // 2, w // 2], x)
    disc.train(was_training)
    rows = g[0, 0].abs().sum(1).nonzero().flatten()
    cols = g[0, 0].abs().sum(0).nonzero().flatten()
    return int(max(rows.max() - rows.min(), cols.max() - cols.min()) + 1)


# ----------------------------------------------------------------------------- the loss terms
def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """L_D = ½ (E[max(0, 1 − D(x))] + E[max(0, 1 + D(x̂))]) (hinge GAN; taming-transformers)."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def hinge_g_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """L_GAN = −E[D(x̂)]: the autoencoder raises D's score of its reconstructions."""
    return -logits_fake.mean()


def adaptive_weight(rec_loss: torch.Tensor, gan_loss: torch.Tensor, last_layer: torch.Tensor,
                    delta: float = 1e-4, max_weight: float = 1e4) -> torch.Tensor:
    """λ = ‖∇_{G_L} L_rec‖ / (‖∇_{G_L} L_GAN‖ + δ) (Esser et al. 2021 eq. 7), clamped to [0, max_weight]
    and detached. G_L = ``last_layer``, the weight of the decoder's last layer. δ = 1e-4 as in the
    taming-transformers code (the paper writes 1e-6); the graph is kept for the backward pass."""
    # 1. gradients of both losses with respect to the last layer only
    g_rec = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_gan = torch.autograd.grad(gan_loss, last_layer, retain_graph=True)[0]
    # 2. the ratio of their norms: the GAN gradient is rescaled to the reconstruction gradient's size
    lam = g_rec.norm() / (g_gan.norm() + delta)
    # 3. a weight, not a path for gradients
    return lam.clamp(0.0, max_weight).detach()


def gan_factor(step: int, disc_start: int) -> float:
    """The warm-up switch: 0 before ``disc_start`` steps, 1 from then on (taming's ``adopt_weight``)."""
    return 1.0 if step >= disc_start else 0.0


class VQGANLoss(nn.Module):
    """Everything the recipe adds around a first stage: the perceptual net, the discriminator, the weights.

    ``generator_loss(x, x_hat, last_layer, step)`` → (L_rec + λ·L_GAN, logs) and
    ``discriminator_loss(x, x_hat)`` → L_D. ``rec="l1"`` (VQGAN/LDM) or ``"l2"``;
    ``perceptual_weight=0`` or ``disc_weight=0`` switch a term off. The adversarial term starts at step
    ``disc_start``; the discriminator trains from ``d_start`` (≤ disc_start, default equal)."""

    def __init__(self, perceptual_weight: float = 1.0, disc_weight: float = 1.0, disc_start: int = 0,
                 rec: str = "l1", disc_ch: int = 32, disc_layers: int = 2, delta: float = 1e-4,
                 perceptual: nn.Module | None = None, d_start: int | None = None):
        super().__init__()
        if rec not in ("l1", "l2"):
            raise ValueError(f"rec must be 'l1' (|x − x̂|, as VQGAN and LDM) or 'l2' (squared error), got {rec!r}")
        d_start = disc_start if d_start is None else d_start
        if perceptual_weight < 0 or disc_weight < 0 or disc_start < 0 or not 0 <= d_start <= disc_start:
            raise ValueError("perceptual_weight, disc_weight and disc_start must be ≥ 0, and the discriminator "
                             "cannot start after the adversarial term (0 ≤ d_start ≤ disc_start)")
        self.perceptual_weight, self.disc_weight, self.disc_start = perceptual_weight, disc_weight, disc_start
        self.d_start = d_start
        self.rec, self.delta = rec, delta
        self.perceptual = perceptual if perceptual is not None else RandomFeatureNet()
        self.discriminator = PatchDiscriminator(disc_ch, disc_layers)

    def gan_on(self, step: int) -> bool:
        """Does the autoencoder get the adversarial term at this step (after the warm-up)?"""
        return self.disc_weight > 0 and gan_factor(step, self.disc_start) > 0

    def d_on(self, step: int) -> bool:
        """Does the discriminator train at this step? From ``d_start`` (default: with the adversarial term;
        earlier lets D learn real vs reconstruction before its gradient reaches the autoencoder)."""
        return self.disc_weight > 0 and gan_factor(step, self.d_start) > 0

    def reconstruction_loss(self, x: torch.Tensor, x_hat: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """L_rec: per-pixel |x − x̂| (or squared) plus w_p · P(x, x̂) on every pixel, summed per image, mean over batch."""
        err = (x - x_hat).abs() if self.rec == "l1" else (x - x_hat).pow(2)
        per_image = err.flatten(1).sum(1)
        logs = {"pixel": per_image.mean().detach()}
        if self.perceptual_weight > 0:
            p = self.perceptual.distance(x, x_hat)
            per_image = per_image + self.perceptual_weight * p * x[0].numel()
            logs["perceptual"] = p.mean().detach()
        return per_image.mean(), logs

    def generator_loss(self, x: torch.Tensor, x_hat: torch.Tensor, last_layer: torch.Tensor,
                       step: int) -> tuple[torch.Tensor, dict]:
        rec, logs = self.reconstruction_loss(x, x_hat)
        if not self.gan_on(step):
            return rec, logs
        self.discriminator.requires_grad_(False)              # G step: D is a fixed critic
        g = hinge_g_loss(self.discriminator(x_hat))
        self.discriminator.requires_grad_(True)
        lam = adaptive_weight(rec, g, last_layer, self.delta) * self.disc_weight
        logs.update(gan=g.detach(), lam=lam)
        return rec + lam * g, logs

    def discriminator_loss(self, x: torch.Tensor, x_hat: torch.Tensor) -> tuple[torch.Tensor, dict]:
        real, fake = self.discriminator(x.detach()), self.discriminator(x_hat.detach())
        d = hinge_d_loss(real, fake)
        return d, {"d_loss": d.detach(), "d_real": real.mean().detach(), "d_fake": fake.mean().detach()}


def first_stage_terms(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Run any first stage of the course on x: (x̂, its own regulariser term, logs).

    lesson 06's KL ``FirstStage``: kl_weight · KL; VQ (``FirstStage(reg="vq")``, ``MoVQFirstStage``):
    the VQ loss scaled like a per-image sum; ``DCAutoencoder``: none."""
    out = model(x)
    if "kl" in out:
        return out["x_hat"], model.kl_weight * out["kl"], {"kl": out["kl"].detach()}
    if "vq" in out:
        return out["x_hat"], out["vq"] * model.latent_shape[0] * model.latent_shape[1] * model.latent_shape[2], \
            {"vq": out["vq"].detach()}
    return out["x_hat"], x.new_zeros(()), {}


def vqgan_loss_fn(loss: VQGANLoss, lr: float = 2e-3, betas=(0.5, 0.9)):
    """A loss_fn for fit() that trains the first stage with the recipe and, inside the same call, first
    takes one discriminator step on the batch's reconstructions (its own Adam, betas (0.5, 0.9) as
    taming-transformers) once the GAN is on.

    fit() then does the generator's backward and step as for any model; the discriminator is not
    part of the model, so fit's optimizer never touches it. Steps are counted by calls."""
    d_opt = torch.optim.Adam(loss.discriminator.parameters(), lr=lr, betas=betas)
    state = {"step": 0}

    def loss_fn(model, batch):
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        step = state["step"]
        state["step"] += 1
        x_hat, reg, logs = first_stage_terms(model, x)
        if loss.d_on(step):
            # 1. discriminator step on this batch (first: the generator's graph below must see D's new weights)
            d_loss, d_logs = loss.discriminator_loss(x, x_hat)
            d_opt.zero_grad(set_to_none=True)
            d_loss.backward()
            d_opt.step()
            logs.update(d_logs)
        # 2. the autoencoder's loss; fit() runs its backward and step
        g_loss, g_logs = loss.generator_loss(x, x_hat, model.last_layer, step)
        logs.update(g_logs)
        return g_loss + reg, logs

    loss_fn.d_optimizer, loss_fn.state = d_opt, state
    return loss_fn


__all__ = ["RandomFeatureNet", "PatchDiscriminator", "measured_receptive_field", "hinge_d_loss", "hinge_g_loss", "adaptive_weight",
           "gan_factor", "VQGANLoss", "first_stage_terms", "vqgan_loss_fn"]
