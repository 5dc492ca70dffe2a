"""An autoregressive prior over VQ-VAE token maps: a tiny causal transformer (lesson 03).

A VQ-VAE has no prior to sample from: its tokens are one-hot posteriors (seed paper eq. 21), and
uniformly random tokens decode to garbage. As in VQ-VAE (PixelCNN prior), VQGAN / DALL-E and
LlamaGen (a plain GPT over image tokens), we learn p(s) = Π_i p(s_i | s_<i, y) over the token map
read in raster order, and sample it one token at a time. Here the map is 7×7 = 49 tokens.

Sampling knobs: temperature and top-k as VQGAN samples (Esser et al. 2021), and classifier-free
guidance on the label (Ho & Salimans 2022) as LlamaGen does (VQGAN has no classifier-free guidance).
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention in which position i only sees positions ≤ i."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        self.heads, self.dropout = heads, dropout
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.ln1, self.attn = nn.LayerNorm(dim), CausalSelfAttention(dim, heads, dropout)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TokenPrior(nn.Module):
    """GPT over token maps: p(s_1 … s_L | y) = Π_i p(s_i | s_<i, y), L = h·w (raster order).

    The sequence fed in is [start, s_1, …, s_{L−1}]; the output at position i is the logits of s_i.
    The start token is a learnt class embedding when ``num_classes`` is set (index ``num_classes``
    is the "no label" class, used for unconditional samples and classifier-free guidance), else a
    single learnt start token.
    """

    def __init__(self, num_codes: int, token_shape: tuple = (7, 7), dim: int = 128, depth: int = 4,
                 heads: int = 4, num_classes: int | None = None, dropout: float = 0.0):
        super().__init__()
        token_shape = tuple(int(s) for s in token_shape)
        if num_codes < 1 or len(token_shape) != 2 or min(token_shape) < 1:
            raise ValueError(f"need num_codes ≥ 1 and a token_shape (h, w) of positive sizes, got {num_codes}, "
                             f"{token_shape}")
        if num_classes is not None and num_classes < 1:
            raise ValueError(f"num_classes must be ≥ 1 or None (unconditional), got {num_classes}")
        self.config = {"num_codes": num_codes, "token_shape": token_shape, "dim": dim, "depth": depth,
                       "heads": heads, "num_classes": num_classes, "dropout": dropout}
        self.num_codes, self.token_shape, self.num_classes = num_codes, token_shape, num_classes
        self.length = token_shape[0] * token_shape[1]
        self.tok = nn.Embedding(num_codes, dim)
        self.start = nn.Embedding((num_classes + 1) if num_classes else 1, dim)
        self.pos = nn.Parameter(torch.zeros(1, self.length, dim))
        nn.init.normal_(self.pos, std=0.02)
        self.blocks = nn.ModuleList(Block(dim, heads, dropout) for _ in range(depth))
        self.ln, self.head = nn.LayerNorm(dim), nn.Linear(dim, num_codes)

    def _check(self, tokens: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        if tokens.dim() == 3:
            if tuple(tokens.shape[1:]) != self.token_shape:
                raise ValueError(f"token maps must be (batch, {self.token_shape[0]}, {self.token_shape[1]}), "
                                 f"got {tuple(tokens.shape)}")
            tokens = tokens.flatten(1)
        if tokens.dim() != 2 or tokens.shape[1] > self.length or tokens.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"tokens must be integer (batch, ≤ {self.length}) or (batch, h, w), "
                             f"got {tokens.dtype} {tuple(tokens.shape)}")
        if y is not None and not self.num_classes:
            raise ValueError("this prior is unconditional (num_classes=None): do not pass y")
        return tokens.long()

    def _start(self, b: int, y: torch.Tensor | None, device) -> torch.Tensor:
        if self.num_classes:
            y = torch.full((b,), self.num_classes, device=device) if y is None else y.to(device).long()
            return self.start(y)[:, None]
        return self.start.weight[None].expand(b, 1, -1)

    def forward(self, tokens: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, n+1 clipped to L, K): position i predicts token i from tokens < i.

        ``tokens`` (B, n) with n ≤ L (or a full map (B, h, w)); the last input token is only used
        when n < L (then the output has n + 1 positions)."""
        tokens = self._check(tokens, y)
        b, n = tokens.shape
        x = torch.cat([self._start(b, y, tokens.device), self.tok(tokens)], dim=1)[:, : self.length]
        x = x + self.pos[:, : x.shape[1]]
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.ln(x))

    def loss(self, tokens: torch.Tensor, y: torch.Tensor | None = None, p_uncond: float = 0.0) -> torch.Tensor:
        """Mean negative log-likelihood per token, in nats (labels dropped with prob. ``p_uncond``)."""
        if not 0.0 <= p_uncond <= 1.0:
            raise ValueError(f"p_uncond is a probability, got {p_uncond}")
        tokens = self._check(tokens, y)
        if y is not None and p_uncond > 0:
            drop = torch.rand(y.shape, device=y.device) < p_uncond
            y = torch.where(drop, torch.full_like(y, self.num_classes), y)
        logits = self(tokens, y)
        return F.cross_entropy(logits.reshape(-1, self.num_codes), tokens.reshape(-1))

    @torch.no_grad()
    def sample(self, n: int, y: torch.Tensor | None = None, temperature: float = 1.0, top_k: int | None = None,
               guidance: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw n token maps (n, h, w), one token at a time in raster order (L forward passes).

        ``guidance`` ≠ 1 with class labels: logits = uncond + w·(cond − uncond) (classifier-free);
        ``temperature`` divides the logits; ``top_k`` keeps only the k likeliest codes."""
        if n < 1:
            raise ValueError(f"n must be ≥ 1, got {n}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be ≥ 1 (or None for no cut), got {top_k}")
        if guidance != 1.0 and y is None:
            raise ValueError("guidance mixes the conditional and unconditional logits: pass class labels y "
                             "(or keep guidance=1.0)")
        device = self.pos.device
        if y is not None:
            y = y.to(device).long()
            if y.shape != (n,):
                raise ValueError(f"y must hold {n} labels, shape ({n},), got {tuple(y.shape)}")
        was_training = self.training
        self.eval()
        tokens = torch.zeros(n, 0, dtype=torch.long, device=device)
        for i in range(self.length):
            # 1. logits of token i given the tokens so far (and the label); guidance mixes in the unconditional ones
            logits = self(tokens, y)[:, i].float()
            if y is not None and guidance != 1.0:
                uncond = self(tokens, None)[:, i].float()
                logits = uncond + guidance * (logits - uncond)
            # 2. temperature, then keep only the top-k logits
            logits = logits / temperature
            if top_k:
                kth = logits.topk(min(top_k, self.num_codes), dim=1).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            # 3. draw token i and append it
            nxt = torch.multinomial(logits.softmax(1).cpu(), 1, generator=generator).to(device)
            tokens = torch.cat([tokens, nxt], dim=1)
        self.train(was_training)
        return tokens.view(n, *self.token_shape)


def prior_loss(p_uncond: float = 0.0):
    """A loss_fn for fit() on batches (tokens, labels) or tokens alone; reports bits per token too.
    Labels are dropped with probability ``p_uncond`` (for classifier-free guidance)."""
    import math

    if not 0.0 <= p_uncond <= 1.0:
        raise ValueError(f"p_uncond is a probability, got {p_uncond}")

    def loss_fn(model: TokenPrior, batch):
        tokens, y = (batch if isinstance(batch, (tuple, list)) else (batch, None))
        if not model.num_classes:
            y = None
        loss = model.loss(tokens, y, p_uncond=p_uncond)
        return loss, {"bits_per_token": loss / math.log(2)}
    return loss_fn
