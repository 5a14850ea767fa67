"""The MoPE training step in PyTorch (eager), the reference of `benches/benches/train_step.rs`.

The same step as ours, shape for shape: a frozen pre-norm ViT (random weights) with MoPE's
prompts inserted before every layer in place of the previous ones ([CLS], static, routed
experts, mapped, patches); each layer's router reads the mean of the layer's input tokens
(projected to 2) and the cached complementary feature (projected to 8), multiplies by frozen
keys, divides by the temperature 0.1, adds noise of std 1/256, softmax; the mapper is
Linear-GELU-Linear-GELU-dropout; the head reads the final-normed [CLS]; cross-entropy plus
0.01 x the importance loss (squared coefficient of variation of the experts' summed weights,
values at or below 0.1 zeroed); backward; one AdamW step (lr 1e-3, weight decay 1e-3).
A text shape (`lengths` set) runs the same step on BERT-style embeddings and PyTorch's post-norm
`nn.TransformerEncoderLayer`s over token ids padded to the longest text, with the padding mask.

Usage (the Rust harness calls it): python mope_step.py --shape '<json>' --steps N --threads T [--device cuda]
Prints one JSON line: samples_per_second, forward_seconds (per step), peak_rss_bytes (CPU runs), label.
"""

import argparse
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Layer(nn.Module):
    """Pre-norm transformer layer (ViT): attention and GELU feed-forward with residuals."""

    def __init__(self, d, heads, ff):
        super().__init__()
        self.norm1 = nn.LayerNorm(d, eps=1e-12)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(d, eps=1e-12)
        self.ff_in = nn.Linear(d, ff)
        self.ff_out = nn.Linear(ff, d)

    def forward(self, x):
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.ff_out(F.gelu(self.ff_in(self.norm2(x))))


class Router(nn.Module):
    def __init__(self, d, d_comp, experts):
        super().__init__()
        self.self_proj = nn.Linear(d, 2)
        self.cross_proj = nn.Linear(d_comp, 8)
        keys, _ = torch.linalg.qr(torch.randn(10, experts))
        self.register_buffer("keys", keys)  # frozen routing embeddings

    def forward(self, pooled, comp):
        logits = torch.cat([self.self_proj(pooled), self.cross_proj(comp)], 1) @ self.keys / 0.1
        if self.training:
            logits = logits + torch.randn_like(logits) / 256
        return logits.softmax(1)


class MoPE(nn.Module):
    def __init__(self, s):
        super().__init__()
        d, self.s = s["d_model"], s
        # Frozen backbone.
        if s["lengths"]:
            # Text: BERT's embeddings and post-norm layers, as PyTorch offers them.
            self.word = nn.Embedding(s["vocab_size"], d)
            self.position = nn.Parameter(torch.randn(512, d) * 0.02)
            self.embed_norm = nn.LayerNorm(d, eps=1e-12)
            layer = lambda: nn.TransformerEncoderLayer(d, s["n_heads"], s["d_ff"], dropout=0.0, activation="gelu", layer_norm_eps=1e-12, batch_first=True)
            self.layers = nn.ModuleList(layer() for _ in range(s["num_layers"]))
        else:
            patches = (s["image_size"] // s["patch_size"]) ** 2
            self.embed = nn.Conv2d(3, d, s["patch_size"], s["patch_size"])
            self.cls = nn.Parameter(torch.randn(1, 1, d) * 0.02)
            self.pos = nn.Parameter(torch.randn(1, 1 + patches, d) * 0.02)
            self.layers = nn.ModuleList(Layer(d, s["n_heads"], s["d_ff"]) for _ in range(s["num_layers"]))
            self.norm = nn.LayerNorm(d, eps=1e-12)
        for p in self.parameters():
            p.requires_grad_(False)
        # Trainable: prompts, routers, mapper, head.
        n, e, el = s["num_layers"], s["num_experts"], s["expert_len"]
        self.static = nn.Parameter(torch.empty(n, s["static_len"], d).uniform_(-0.1, 0.1))
        self.experts = nn.Parameter(torch.empty(n, e, el, d).uniform_(-0.1, 0.1))
        self.routers = nn.ModuleList(Router(d, s["d_complementary"], e) for _ in range(n))
        self.map_hidden = nn.Linear(s["d_complementary"], 384)
        self.map_out = nn.Linear(384, s["mapped_len"] * d)
        self.drop = nn.Dropout(0.1)
        self.head = nn.Linear(d, s["num_classes"])

    def forward(self, pixels, comp):
        if self.s["lengths"]:
            return self.forward_text(*pixels, comp)
        s, b = self.s, pixels.shape[0]
        d = s["d_model"]
        x = self.embed(pixels).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(b, -1, -1), x], 1) + self.pos
        mapped = self.drop(F.gelu(self.map_out(F.gelu(self.map_hidden(comp))))).view(b, s["mapped_len"], d)
        n_prompts, weights = 0, []
        for i, layer in enumerate(self.layers):
            w = self.routers[i](x.mean(1), comp)
            weights.append(w)
            dynamic = (w @ self.experts[i].flatten(1)).view(b, s["expert_len"], d)
            prompts = torch.cat([self.static[i].expand(b, -1, -1), dynamic, mapped], 1)
            x = torch.cat([x[:, :1], prompts, x[:, 1 + n_prompts:]], 1)
            n_prompts = prompts.shape[1]
            x = layer(x)
        logits = self.head(self.norm(x)[:, 0])
        importance = torch.stack([imp_loss(w) for w in weights]).mean()
        return logits, importance


    def forward_text(self, ids, pad, comp):
        """Text tokens padded to the longest (`pad`: True at padding); the router reads the mean
        of the real tokens, the head the mean of the text tokens (prompts and padding left out)."""
        s, b = self.s, ids.shape[0]
        d = s["d_model"]
        x = self.embed_norm(self.word(ids) + self.position[: ids.shape[1]])
        keep = ~pad
        mapped = self.drop(F.gelu(self.map_out(F.gelu(self.map_hidden(comp))))).view(b, s["mapped_len"], d)
        n_prompts, weights = 0, []
        for i, layer in enumerate(self.layers):
            k = keep.unsqueeze(2).float()
            w = self.routers[i]((x * k).sum(1) / k.sum(1), comp)
            weights.append(w)
            dynamic = (w @ self.experts[i].flatten(1)).view(b, s["expert_len"], d)
            prompts = torch.cat([self.static[i].expand(b, -1, -1), dynamic, mapped], 1)
            x = torch.cat([x[:, :1], prompts, x[:, 1 + n_prompts:]], 1)
            keep = torch.cat([keep[:, :1], keep.new_ones(b, prompts.shape[1]), keep[:, 1 + n_prompts:]], 1)
            n_prompts = prompts.shape[1]
            x = layer(x, src_key_padding_mask=~keep)
        text = keep.clone()
        text[:, 1:1 + n_prompts] = False
        t = text.unsqueeze(2).float()
        logits = self.head((x * t).sum(1) / t.sum(1))
        importance = torch.stack([imp_loss(w) for w in weights]).mean()
        return logits, importance


def imp_loss(w):
    imp = w.sum(0)
    imp = torch.where(imp > 0.1, imp, torch.zeros_like(imp))
    return imp.var() / (imp.mean() ** 2 + 1e-10)


def peak_rss_bytes():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", required=True)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    s = json.loads(args.shape)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = MoPE(s).train().to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-3, weight_decay=1e-3)
    b = s["batch"]
    if s["lengths"]:
        # Random ids after [CLS] (101), padding (0) after each text, as ours.
        longest = max(s["lengths"])
        position = torch.arange(longest).expand(b, -1)
        lengths = torch.tensor(s["lengths"]).unsqueeze(1)
        ids = torch.randint(1000, s["vocab_size"], (b, longest))
        ids[:, 0] = 101
        pad = position >= lengths
        ids[pad] = 0
        pixels = (ids.to(device), pad.to(device))
    else:
        pixels = torch.randn(b, 3, s["image_size"], s["image_size"], device=device)
    comp = torch.randn(b, s["d_complementary"], device=device)
    labels = torch.arange(b, device=device) % s["num_classes"]

    def sync():
        # CUDA queues its work: wait for it before reading the clock.
        if device.type == "cuda":
            torch.cuda.synchronize()

    timed = forward = 0.0
    for step in range(args.steps + 1):
        sync()
        start = time.perf_counter()
        logits, importance = model(pixels, comp)
        loss = F.cross_entropy(logits, labels) + 0.01 * importance
        sync()
        forward_done = time.perf_counter() - start
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sync()
        if step > 0:
            timed += time.perf_counter() - start
            forward += forward_done
    print(json.dumps({
        "samples_per_second": args.steps * b / timed,
        "forward_seconds": forward / args.steps,
        # The host's high-water mark means nothing for a GPU run (as on our side).
        "peak_rss_bytes": peak_rss_bytes() if device.type == "cpu" else None,
        "label": f"PyTorch {torch.__version__} eager on {device.type}",
    }))


if __name__ == "__main__":
    main()
