"""Vector quantisation (lesson 03; van den Oord et al. 2017, seed paper eq. 20–25): the codebook layer
with its two stop-gradient losses, the EMA codebook update (a k-means step), dead-code restart and
k-means initialisation, and the VQ-VAE built on the conv encoder/decoder stacks of ``nn.py``.
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from .metrics import psnr
from .nn import ConvDecoder, ConvEncoder, check_image_batch, eval_batch_size, eval_batches

IMAGE_SHAPE = (1, 28, 28)


def squared_distances(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """‖z_i − e_k‖² for all rows z_i (N, D) and codes e_k (K, D) → (N, K) (the distance of eq. 20).

    Expanded as ‖z‖² − 2 z·e + ‖e‖² (one matrix product), so no (N, K, D) temporary is built.
    """
    if z.dim() != 2 or codebook.dim() != 2 or z.shape[1] != codebook.shape[1]:
        raise ValueError(f"z must be (N, D) and codebook (K, D) with the same D, got "
                         f"{tuple(z.shape)} and {tuple(codebook.shape)}")
    z2 = z.pow(2).sum(1, keepdim=True)                          # (N, 1)
    e2 = codebook.pow(2).sum(1)                                 # (K,)
    return torch.addmm(e2[None], z, codebook.t(), alpha=-2.0).add_(z2).clamp_min_(0.0)


def codebook_perplexity(counts: torch.Tensor) -> torch.Tensor:
    """exp(entropy) of the code-usage distribution p_k = n_k / Σ n: K when all K codes are used
    equally often, 1 when a single code is used. The "effective number of codes"."""
    p = counts.float() / counts.float().sum().clamp_min(1e-12)
    return torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum())


class VectorQuantizer(nn.Module):
    """The VQ bottleneck of VQ-VAE (van den Oord et al. 2017), seed paper eq. 20–25.

    Each D-vector of the encoder output z_e (B, D, H, W) is replaced by its nearest code
    e_k, k = argmin_j ‖z_e − e_j‖² (eq. 20; the posterior q(z = k | x) is one-hot, eq. 21).
    The argmin has no gradient, so the decoder's gradient is copied straight through to the
    encoder: z_q = z_e + sg[e_k − z_e] (the value is e_k, the gradient is that of z_e).

    Two ways to learn the codebook:
    - ``ema=False``: the codebook loss ‖sg[z_e] − e‖² (eq. 23) moves the codes;
    - ``ema=True`` (default): codes are running means of the vectors assigned to them (an online
      k-means step; slides, van den Oord 2017 app. A.1, Razavi 2019), see ``ema_step``.
    Either way the commitment loss β‖z_e − sg[e]‖² (eq. 24) keeps the encoder near its codes.
    ``loss`` = codebook term + β · commitment term (eq. 25 without the reconstruction term), both
    as **means over the B·D·H·W latent elements** (like F.mse_loss); multiply by D·H·W for the
    per-image sums of eq. 25 (``VQVAE`` and ``latent.FirstStage`` do). (The authors' reference code,
    Sonnet, averages each term per element instead and divides the MSE by the data variance.)

    ``restart_dead=True`` (default) re-seeds codes whose running usage (assignments per batch,
    averaged with ``usage_decay``) falls below ``dead_threshold`` with random encoder outputs of
    the current batch (Dhariwal et al. 2020, Jukebox). ``init_kmeans(z)`` sets the codes by k-means.

    The running usage starts at a neutral value: at the first training batch of N vectors every
    code is credited with the average N / K, as if the codebook had been used uniformly (the same
    grace a restarted code gets). Starting it at 0 would make almost every code "dead" after one
    step (usage (1 − γ_u)·n_k < 1 unless n_k ≥ 1/(1 − γ_u) = 100 at γ_u = 0.99) and re-seed nearly
    the whole codebook at step 1, before any code could ever win: a hidden data initialisation.
    Now a code that never wins is restarted after ⌈ln(N / (K·threshold)) / −ln γ_u⌉ steps.
    """

    def __init__(self, num_codes: int = 512, code_dim: int = 16, beta: float = 0.25, ema: bool = True,
                 decay: float = 0.99, eps: float = 1e-5, restart_dead: bool = True,
                 dead_threshold: float = 1.0, usage_decay: float = 0.99):
        super().__init__()
        if num_codes < 1 or code_dim < 1:
            raise ValueError(f"num_codes and code_dim must be ≥ 1, got {num_codes}, {code_dim}")
        for name, v in (("decay", decay), ("usage_decay", usage_decay)):
            if not 0.0 <= v < 1.0:
                raise ValueError(f"{name} must be in [0, 1) (the weight of the running average's past), got {v}")
        for name, v in (("beta", beta), ("eps", eps), ("dead_threshold", dead_threshold)):
            if not v >= 0:
                raise ValueError(f"{name} must be ≥ 0, got {v}")
        self.config = {"num_codes": num_codes, "code_dim": code_dim, "beta": beta, "ema": ema,
                       "decay": decay, "eps": eps, "restart_dead": restart_dead,
                       "dead_threshold": dead_threshold, "usage_decay": usage_decay}
        self.num_codes, self.code_dim, self.beta = num_codes, code_dim, beta
        self.ema, self.decay, self.eps = ema, decay, eps
        self.restart_dead, self.dead_threshold, self.usage_decay = restart_dead, dead_threshold, usage_decay
        # nn.Embedding's default init would be N(0, 1); the VQ-VAE papers use U(−1/K, 1/K)
        self.codebook = nn.Parameter(torch.empty(num_codes, code_dim).uniform_(-1 / num_codes, 1 / num_codes),
                                     requires_grad=not ema)
        self.register_buffer("ema_count", torch.ones(num_codes))                 # N_k
        self.register_buffer("ema_sum", self.codebook.detach().clone())          # m_k (so m_k / N_k = e_k)
        self.register_buffer("usage", torch.zeros(num_codes))                    # running assignments / batch
        #                                                  (all 0 = no batch seen yet; set to N/K at the first)
        self.register_buffer("restarts", torch.zeros((), dtype=torch.long))      # codes re-seeded so far

    # --- quantisation (eq. 20-25) ---------------------------------------------------------
    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """Indices (N,) of the nearest codes for rows z (N, D) (eq. 20), in ≥ float32 precision."""
        dtype = torch.promote_types(torch.promote_types(z.dtype, self.codebook.dtype), torch.float32)
        return squared_distances(z.to(dtype), self.codebook.detach().to(dtype)).argmin(1)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Token map (B, H, W) of code indices → quantised vectors (B, D, H, W)."""
        if indices.dtype not in (torch.int64, torch.int32) or indices.dim() != 3:
            raise ValueError(f"indices must be an integer tensor (batch, H, W), got "
                             f"{indices.dtype} {tuple(indices.shape)}")
        if indices.numel() and (indices.min() < 0 or indices.max() >= self.num_codes):
            raise ValueError(f"indices must lie in [0, {self.num_codes - 1}]")
        return self.codebook[indices.long()].permute(0, 3, 1, 2).contiguous()

    def forward(self, z_e: torch.Tensor) -> dict:
        """Quantise z_e (B, D, H, W). Returns a dict: ``z_q`` (straight-through, B×D×H×W),
        ``indices`` (B, H, W), ``loss``, ``codebook_loss``, ``commitment_loss`` (means per latent
        element), ``counts`` (K,), ``perplexity``. In training mode the codebook maintenance (EMA
        step, dead-code restarts) happens between steps 2 and 3, after which the vectors are assigned
        again to the moved codes (Sonnet's reference implementation quantises with the old codebook
        and updates it afterwards; the two differ by one EMA step)."""
        check_image_batch(z_e, self.code_dim, name="VectorQuantizer input (the encoder output z_e)")
        with torch.autocast(z_e.device.type, enabled=False):   # argmin in bf16 would pick wrong codes
            z_e = z_e.to(torch.promote_types(self.codebook.dtype, torch.float32))
            b, d, h, w = z_e.shape
            flat = z_e.permute(0, 2, 3, 1).reshape(-1, d).detach()      # (N, D), N = B·H·W
            # 1. squared distances ‖z_e − e_j‖² to every code (eq. 20), one (N, K) matrix product
            dist = squared_distances(flat, self.codebook.detach().to(flat.dtype))
            # 2. nearest code k = argmin_j (eq. 20): the one-hot posterior q(z = k | x) (eq. 21)
            idx = dist.argmin(1)
            if self.training and self._maintain(flat, idx):      # EMA / restarts moved codes: assign again
                idx = self.nearest(flat)
            # 3. z_q = e_k (F.embedding: its CPU backward sums rows in a fixed order, so runs repeat)
            e = F.embedding(idx, self.codebook).view(b, h, w, d).permute(0, 3, 1, 2)
            # 4. codebook loss ‖sg[z_e] − e‖² (eq. 23) moves only the codes, commitment loss
            #    ‖z_e − sg[e]‖² (eq. 24) only the encoder; the VQ part of eq. 25 (no codebook term with EMA)
            codebook_loss = F.mse_loss(e, z_e.detach())
            commitment_loss = F.mse_loss(z_e, e.detach())
            loss = self.beta * commitment_loss + (0.0 if self.ema else codebook_loss)
            # 5. straight-through estimator: the value is e_k, the gradient that of z_e
            z_q = z_e + (e - z_e).detach()
        counts = torch.bincount(idx, minlength=self.num_codes).float()
        return {"z_q": z_q, "indices": idx.view(b, h, w), "loss": loss, "codebook_loss": codebook_loss,
                "commitment_loss": commitment_loss, "counts": counts,
                "perplexity": codebook_perplexity(counts)}

    # --- codebook maintenance -------------------------------------------------------------
    def _check_rows(self, z: torch.Tensor, idx: torch.Tensor | None = None) -> None:
        if z.dim() != 2 or z.shape[1] != self.code_dim:
            raise ValueError(f"z must hold rows (N, {self.code_dim}), got {tuple(z.shape)}")
        if idx is not None and (idx.shape != (z.shape[0],) or idx.dtype not in (torch.int64, torch.int32)
                                or (idx.numel() and (idx.min() < 0 or idx.max() >= self.num_codes))):
            raise ValueError(f"idx must be {z.shape[0]} integer code indices in [0, {self.num_codes - 1}], "
                             f"got {idx.dtype} {tuple(idx.shape)}")

    @torch.no_grad()
    def ema_step(self, z: torch.Tensor, idx: torch.Tensor) -> None:
        """One EMA (online k-means) update of the codebook from rows z (N, D) assigned to codes idx
        (slides: "k-means step with EMA"; van den Oord 2017 app. A.1; Razavi 2019).

        γ = ``decay``. With γ = 0 *and* ε = 0 this is exactly one k-means (Lloyd) step for the used
        codes; ε > 0 rescales every code by n_k / Ñ_k = (1 + Kε/n) / (1 + ε/n_k) (n = Σ_j n_j):
        just below 1 for codes used less than the average n/K, just above 1 for codes used more,
        exactly 1 only at ε = 0 or n_k = n/K. (Laplace smoothing of the counts as in the authors'
        reference code, Sonnet's ``VectorQuantizerEMA``; app. A.1 has e = m/N.) A code that gets no
        vector is not frozen: N_k and m_k both decay by γ per step, and once N_k falls to the order of
        ε, e_k = m_k / Ñ_k slides towards the origin, wherever the data are."""
        self._check_rows(z, idx)
        self._ema_step(z, idx)

    def _ema_step(self, z: torch.Tensor, idx: torch.Tensor) -> None:
        # 1. this batch's statistics per code: n_k = #{i: k_i = k}, s_k = Σ_{i: k_i = k} z_i
        n_k = torch.bincount(idx, minlength=self.num_codes).to(z.dtype)
        s_k = torch.zeros_like(self.ema_sum).index_add_(0, idx, z)
        # 2. running averages: N_k ← γ N_k + (1 − γ) n_k,  m_k ← γ m_k + (1 − γ) s_k
        self.ema_count.mul_(self.decay).add_(n_k, alpha=1 - self.decay)
        self.ema_sum.mul_(self.decay).add_(s_k, alpha=1 - self.decay)
        # 3. Laplace smoothing: Ñ_k = (N_k + ε) / (Σ_j N_j + K ε) · Σ_j N_j  (no division by 0)
        n = self.ema_count.sum()
        smoothed = (self.ema_count + self.eps) / (n + self.num_codes * self.eps) * n
        # 4. every code is the running mean of its vectors: e_k = m_k / Ñ_k
        #    (a code with N_k exactly 0, possible only with ε = 0, keeps its place)
        self.codebook.data.copy_(torch.where(self.ema_count[:, None] > 0, self.ema_sum / smoothed[:, None],
                                             self.codebook.data))

    @torch.no_grad()
    def restart_dead_codes(self, z: torch.Tensor) -> int:
        """Re-seed codes whose running usage is below ``dead_threshold`` with random rows of z (N, D)
        (Dhariwal et al. 2020). Returns how many codes were restarted."""
        self._check_rows(z)
        return self._restart_dead_codes(z)

    def _restart_dead_codes(self, z: torch.Tensor) -> int:
        # 1. dead codes: running usage (assignments per batch) below the threshold
        dead = (self.usage < self.dead_threshold).nonzero().flatten()
        if dead.numel() == 0:
            return 0
        # 2. each goes to a random encoder output of this batch; its EMA statistics restart there
        pick = torch.randint(0, z.shape[0], (dead.numel(),), device=z.device)
        self.codebook.data[dead] = z[pick]
        self.ema_sum[dead] = z[pick]
        self.ema_count[dead] = 1.0
        # 3. a grace period: a restarted code counts as average until it proves otherwise
        self.usage[dead] = max(self.usage.mean().item(), 2 * self.dead_threshold)
        self.restarts += dead.numel()
        return int(dead.numel())

    @torch.no_grad()
    def _maintain(self, z: torch.Tensor, idx: torch.Tensor) -> bool:
        """Training-time bookkeeping after the assignment: usage, EMA step, restarts.
        Returns True when codes may have moved (then the caller assigns again)."""
        counts = torch.bincount(idx, minlength=self.num_codes).to(self.usage.dtype)
        if not self.usage.any():            # first batch: every code starts at the average usage N/K
            self.usage.fill_(idx.numel() / self.num_codes)
        self.usage.mul_(self.usage_decay).add_(counts, alpha=1 - self.usage_decay)
        if self.ema:
            self._ema_step(z, idx)
        if self.restart_dead:
            self._restart_dead_codes(z)
        return self.ema or self.restart_dead

    @torch.no_grad()
    def init_kmeans(self, z: torch.Tensor, iters: int = 50, seed: int = 0) -> None:
        """Set the codebook to k-means centroids of encoder outputs z (N, D) or (B, D, H, W)
        (scikit-learn, k-means++ seeding; N must be ≥ K). Resets the EMA statistics and the running
        usage (back to "no batch seen yet") to match. 49 000 × 16 vectors, K = 512, 50 iterations:
        about 3–4 s of CPU time."""
        from sklearn.cluster import KMeans

        if z.dim() == 4:
            z = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        if z.dim() != 2 or z.shape[1] != self.code_dim or z.shape[0] < self.num_codes:
            raise ValueError(f"k-means init needs at least {self.num_codes} vectors of size "
                             f"{self.code_dim}, got {tuple(z.shape)}")
        km = KMeans(self.num_codes, n_init=1, max_iter=iters, random_state=seed)
        km.fit(z.detach().float().cpu().numpy())
        centers = torch.as_tensor(km.cluster_centers_, dtype=self.codebook.dtype, device=self.codebook.device)
        self.codebook.data.copy_(centers)
        self.ema_sum.copy_(centers)
        self.ema_count.fill_(1.0)
        self.usage.zero_()


class VQVAE(nn.Module):
    """VQ-VAE with a spatial token map: x (B, 1, 28, 28) → z_e (B, D, 7, 7) → 7×7 code indices
    → z_q → x̂ (B, 1, 28, 28).

    Loss: eq. 25 per image, ‖x − x̂‖² + ‖sg[z_e] − e‖² + β‖z_e − sg[e]‖² with every norm summed over
    its image (C·H·W pixels) or its latent (D·h·w elements), divided by the constant C·H·W = 784 so
    that it reads as a per-pixel MSE. So β weighs the summed commitment against the summed
    reconstruction error as eq. 25 is written per image, whatever D and h·w are (the reference code
    averages per element instead; van den Oord et al. report β in 0.1–2.0 working alike): ``recon`` is the MSE per pixel, ``vq_loss`` the
    quantiser's per-element ``loss`` times ``vq_weight`` = D·h·w / C·H·W.

    Defaults match ``VectorQuantizer`` (EMA codebook, dead-code restarts). ``ch_mult`` of length 3
    gives f = 4 (28 → 7); the decoder output is unconstrained (clamp to [0, 1] for display)."""

    def __init__(self, num_codes: int = 512, code_dim: int = 16, ch: int = 32, ch_mult: tuple = (1, 2, 2),
                 num_res: int = 1, beta: float = 0.25, ema: bool = True, decay: float = 0.99,
                 eps: float = 1e-5, restart_dead: bool = True, dead_threshold: float = 1.0):
        super().__init__()
        ch_mult = tuple(ch_mult)
        self.config = {"num_codes": num_codes, "code_dim": code_dim, "ch": ch, "ch_mult": ch_mult,
                       "num_res": num_res, "beta": beta, "ema": ema, "decay": decay, "eps": eps,
                       "restart_dead": restart_dead, "dead_threshold": dead_threshold}
        self.encoder = ConvEncoder(1, code_dim, ch, ch_mult, num_res)
        self.quantizer = VectorQuantizer(num_codes, code_dim, beta, ema, decay, eps, restart_dead, dead_threshold)
        self.decoder = ConvDecoder(code_dim, 1, ch, ch_mult, num_res, out_size=IMAGE_SHAPE[1])
        self.token_shape = tuple([self.decoder.sizes[0]] * 2)      # (7, 7) for ch_mult of length 3
        n_pixels = IMAGE_SHAPE[0] * IMAGE_SHAPE[1] * IMAGE_SHAPE[2]
        self.vq_weight = code_dim * self.token_shape[0] * self.token_shape[1] / n_pixels   # D·h·w / C·H·W

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """z_e = ℰ(x), (B, D, h, w)."""
        check_image_batch(x, 1, IMAGE_SHAPE[1:], "VQVAE input")
        return self.encoder(x)

    @torch.no_grad()
    def tokenize(self, x: torch.Tensor) -> torch.Tensor:
        """Images → token maps (B, h, w) of code indices (eq. 20)."""
        z = self.encode(x)
        flat = z.float().permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        return self.quantizer.nearest(flat).view(z.shape[0], *z.shape[2:])

    def decode(self, z_q: torch.Tensor) -> torch.Tensor:
        """Quantised latents (B, D, h, w) → x̂ (B, 1, 28, 28), unclamped."""
        check_image_batch(z_q, self.quantizer.code_dim, self.token_shape, "VQVAE latent z_q")
        return self.decoder(z_q)

    def decode_tokens(self, indices: torch.Tensor) -> torch.Tensor:
        """Token maps (B, h, w) → images (B, 1, 28, 28), clamped to [0, 1]."""
        if indices.dim() != 3 or tuple(indices.shape[1:]) != self.token_shape:
            raise ValueError(f"token maps must have shape (batch, {self.token_shape[0]}, "
                             f"{self.token_shape[1]}), got {tuple(indices.shape)}")
        return self.decode(self.quantizer.lookup(indices)).clamp(0, 1)

    def forward(self, x: torch.Tensor) -> dict:
        """Quantiser outputs plus ``x_hat``, ``recon`` (MSE per pixel, eq. 22), ``vq_loss`` (the VQ
        terms on the same per-image scale) and ``loss`` = recon + vq_loss (eq. 25 / C·H·W)."""
        q = self.quantizer(self.encode(x))
        x_hat = self.decoder(q["z_q"])
        recon = F.mse_loss(x_hat, x)                        # ‖x − x̂‖² / (C·H·W), eq. 22
        vq_loss = self.vq_weight * q["loss"]                # (‖sg[z_e] − e‖² + β‖z_e − sg[e]‖²) / (C·H·W)
        return {**q, "x_hat": x_hat, "recon": recon, "vq_loss": vq_loss, "loss": recon + vq_loss}


def vqvae_loss(model: VQVAE, batch):
    """A loss_fn for fit() (like ``first_stage_loss``): eq. 25 per image / C·H·W on a batch of
    images in [0, 1] (or (images, labels)), with the terms, the codebook usage and the number of
    dead-code restarts so far (cumulative, 0 without restarts) as metrics."""
    x = batch[0] if isinstance(batch, (tuple, list)) else batch
    out = model(x)
    return out["loss"], {"recon": out["recon"], "vq": out["vq_loss"], "commitment": out["commitment_loss"],
                         "perplexity": out["perplexity"], "used": (out["counts"] > 0).sum(),
                         "restarts": model.quantizer.restarts.float()}


@torch.no_grad()
def tokenize_dataset(model: VQVAE, x: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
    """Token maps (N, h, w) of every image in ``x`` (eq. 20), in evaluation batches (``eval_batches``)."""
    was = model.training
    model.eval()
    tokens = torch.cat(eval_batches(model.tokenize, x, batch_size))
    model.train(was)
    return tokens


@torch.no_grad()
def evaluate_vqvae(model: VQVAE, x: torch.Tensor, batch_size: int | None = None) -> dict:
    """Tokenise and reconstruct ``x`` (N, 1, 28, 28) in [0, 1]: mean PSNR (dB) of the decoded
    tokens and its standard error over the images (``psnr_se``), code-usage ``counts`` (K,), number
    of ``used`` codes, the usage ``perplexity`` and the token maps."""
    check_image_batch(x, 1, IMAGE_SHAPE[1:], "evaluate_vqvae images")
    batch_size = batch_size or eval_batch_size(x.device)
    model.eval()
    tokens, scores = [], []
    for i in range(0, len(x), batch_size):
        t = model.tokenize(x[i:i + batch_size])
        tokens.append(t)
        scores.append(psnr(x[i:i + batch_size], model.decode_tokens(t)))
    tokens, scores = torch.cat(tokens), torch.cat(scores)
    counts = torch.bincount(tokens.flatten(), minlength=model.quantizer.num_codes).float().cpu()
    se = scores.std().item() / len(scores) ** 0.5 if len(scores) > 1 else float("nan")
    return {"psnr": scores.mean().item(), "psnr_se": se, "counts": counts, "used": int((counts > 0).sum()),
            "perplexity": codebook_perplexity(counts).item(), "tokens": tokens}
