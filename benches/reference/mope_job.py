"""The emoji training job in PyTorch (eager), the reference of `benches/benches/job.rs`.

An independent implementation of what `mope train experiments/emoji/<method>/experiment.toml`
runs, reading the same assets (`.assets/datasets/emoji`, MiniLM's safetensors and tokenizer,
MobileNetV2's safetensors): the keywords tokenised per batch and padded to the batch's longest
text, a frozen MiniLM (post-norm BERT) with prompts inserted after [CLS] before every prompted
layer in place of the previous ones, mean pooling over the text tokens, and a linear head.

- prompt-tuning: static prompts; the head reads [MiniLM pooled ; image feature].
- sequential: static prompts + the mapped prompt (Linear-GELU-Linear-GELU-dropout of the image
  feature); the head reads MiniLM pooled.
- mope: static + routed experts + mapped; each layer's router reads the masked mean of the layer's
  input tokens (projected to 2) and the image feature (projected to 8), times frozen orthogonal
  keys, / 0.1, + N(0, 1/256^2) noise in training, softmax; loss = cross-entropy + 0.01 x the mean
  over layers of the importance loss (CV^2 of the experts' summed weights, unbiased, zeroed at or
  below 0.1).

AdamW (lr 2e-3, weight decay 1e-3), warm-up 5 steps then cosine to 0.05 of the rate, batch 32.
Gradients are clipped to a global norm of 1, as ours. The image features (MobileNetV2's pooled
1280-wide map, resize 256, centre-crop 224) are computed before the clock starts and kept in
`.cache/reference/`, as ours come from its feature cache.

Usage: python mope_job.py --method mope --assets .assets --threads 2 [--epochs 1] [--static-len 6 ...] [--phases]
Prints one JSON line: train_samples_per_second (first epoch, everything in the loop), val_samples_per_second,
val_accuracy, peak_rss_bytes, label; with --phases, seconds per step of each phase over one epoch.
"""

import argparse
import json
import math
import resource
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file
from tokenizers import Tokenizer


# ---- MobileNetV2 (torchvision's layout, so that its state-dict keys load as they are) ----

def conv_bn(cin, cout, kernel, stride, groups=1, relu=True):
    layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, *([nn.ReLU6()] if relu else []))


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = cin * expand
        layers = [] if expand == 1 else [conv_bn(cin, hidden, 1, 1)]
        layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden), nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)


def mobilenet_v2(path):
    blocks, cin = [conv_bn(3, 32, 3, 2)], 32
    for t, c, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]:
        for i in range(n):
            blocks.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
            cin = c
    blocks.append(conv_bn(320, 1280, 1, 1))
    net = nn.Module()
    net.features = nn.Sequential(*blocks)
    weights = {k: v for k, v in load_file(path).items() if k.startswith("features.")}
    net.load_state_dict(weights)
    return net.eval()


def image_tensor(path):
    image = Image.open(path).convert("RGB")
    w, h = image.size
    scale = 256 / min(w, h)
    image = image.resize((round(w * scale), round(h * scale)), Image.BILINEAR)
    left, top = (image.width - 224) // 2, (image.height - 224) // 2
    x = torch.from_numpy(np.asarray(image.crop((left, top, left + 224, top + 224)), dtype=np.float32) / 255.0)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    return ((x - mean) / std).permute(2, 0, 1)


@torch.no_grad()
def image_features(net, root, rows, batch=64):
    out = []
    for i in range(0, len(rows), batch):
        x = torch.stack([image_tensor(root / r["img"]) for r in rows[i:i + batch]])
        out.append(net.features(x).mean((2, 3)))
    return torch.cat(out)


# ---- MiniLM (BERT, post-norm) with deep prompts ----

class BertLayer(nn.Module):
    def __init__(self, w, prefix, d, heads):
        super().__init__()
        self.heads = heads
        lin = lambda name: self._linear(w, f"{prefix}.{name}")
        self.q, self.k, self.v = lin("attention.self.query"), lin("attention.self.key"), lin("attention.self.value")
        self.o, self.ff_in, self.ff_out = lin("attention.output.dense"), lin("intermediate.dense"), lin("output.dense")
        self.norm1 = self._norm(w, f"{prefix}.attention.output.LayerNorm", d)
        self.norm2 = self._norm(w, f"{prefix}.output.LayerNorm", d)

    @staticmethod
    def _linear(w, name):
        weight = w[f"{name}.weight"]
        layer = nn.Linear(weight.shape[1], weight.shape[0])
        layer.load_state_dict({"weight": weight, "bias": w[f"{name}.bias"]})
        return layer

    @staticmethod
    def _norm(w, name, d):
        norm = nn.LayerNorm(d, eps=1e-12)
        norm.load_state_dict({"weight": w[f"{name}.weight"], "bias": w[f"{name}.bias"]})
        return norm

    def forward(self, x, attend):
        b, s, d = x.shape
        split = lambda t: t.view(b, s, self.heads, d // self.heads).transpose(1, 2)
        a = F.scaled_dot_product_attention(split(self.q(x)), split(self.k(x)), split(self.v(x)), attn_mask=attend)
        x = self.norm1(x + self.o(a.transpose(1, 2).reshape(b, s, d)))
        return self.norm2(x + self.ff_out(F.gelu(self.ff_in(x))))


class MiniLM(nn.Module):
    def __init__(self, path):
        super().__init__()
        w = load_file(path)
        self.word = nn.Embedding.from_pretrained(w["embeddings.word_embeddings.weight"])
        self.position = w["embeddings.position_embeddings.weight"]
        self.token_type = w["embeddings.token_type_embeddings.weight"][0]
        self.norm = BertLayer._norm(w, "embeddings.LayerNorm", 384)
        self.layers = nn.ModuleList(BertLayer(w, f"encoder.layer.{i}", 384, 12) for i in range(6))

    def embed(self, ids):
        return self.norm(self.word(ids) + self.position[: ids.shape[1]] + self.token_type)


class Router(nn.Module):
    def __init__(self, d, d_comp, experts, generator):
        super().__init__()
        self.self_proj, self.cross_proj = nn.Linear(d, 2), nn.Linear(d_comp, 8)
        keys, _ = torch.linalg.qr(torch.randn(10, experts, generator=generator))
        self.register_buffer("keys", keys)

    def forward(self, pooled, comp):
        logits = torch.cat([self.self_proj(pooled), self.cross_proj(comp)], 1) @ self.keys / 0.1
        if self.training:
            logits = logits + torch.randn_like(logits) / 256
        return logits.softmax(1)


class Model(nn.Module):
    def __init__(self, a, encoder, d_comp, classes, generator):
        super().__init__()
        d, self.method, self.layers = 384, a.method, a.prompted_layers
        rng = math.sqrt(6.0 / float(3 * 4 * 4 + d))  # VPT's uniform range (patch 4), as ours
        uniform = lambda *shape: nn.Parameter(torch.empty(*shape).uniform_(-rng, rng, generator=generator))
        self.encoder = encoder.requires_grad_(False)
        self.static = nn.ParameterList(uniform(a.static_len, d) for _ in self.layers)
        experts = a.method == "mope"
        self.experts = nn.ParameterList(uniform(a.num_experts, a.expert_len, d) for _ in self.layers) if experts else None
        self.routers = nn.ModuleList(Router(d, d_comp, a.num_experts, generator) for _ in self.layers) if experts else None
        mapped = a.method in ("mope", "sequential")
        self.mapper = nn.Sequential(nn.Linear(d_comp, a.mapper_hidden), nn.GELU(), nn.Linear(a.mapper_hidden, d), nn.GELU(), nn.Dropout(0.1)) if mapped else None
        self.head = nn.Linear(d + (d_comp if a.method == "prompt-tuning" else 0), classes)

    def forward(self, ids, pad, comp, clock=None):
        lap = clock.lap if clock else (lambda *_: None)
        b = ids.shape[0]
        x, keep = self.encoder.embed(ids), ~pad
        lap("embed")
        mapped = self.mapper(comp).unsqueeze(1) if self.mapper is not None else None
        lap("prompts")
        weights, n_prompts = [], 0
        for layer, module in enumerate(self.encoder.layers):
            if layer in self.layers:
                i = self.layers.index(layer)
                parts = [self.static[i].expand(b, -1, -1)]
                if self.routers is not None:
                    k = keep.unsqueeze(2).float()
                    r = self.routers[i]((x * k).sum(1) / k.sum(1).clamp_min(1), comp)
                    weights.append(r)
                    parts.append(torch.einsum("be,eld->bld", r, self.experts[i]))
                if mapped is not None:
                    parts.append(mapped)
                prompt = torch.cat(parts, 1)
                lap("prompts")
                x = torch.cat([x[:, :1], prompt, x[:, 1 + n_prompts:]], 1)
                keep = torch.cat([keep[:, :1], keep.new_ones(b, prompt.shape[1]), keep[:, 1 + n_prompts:]], 1)
                n_prompts = prompt.shape[1]
            x = module(x, keep[:, None, None, :])
            if layer + 1 < len(self.encoder.layers):
                lap(f"layer{layer}")
        text = keep.clone()
        text[:, 1:1 + n_prompts] = False
        t = text.unsqueeze(2).float()
        pooled = (x * t).sum(1) / t.sum(1).clamp_min(1)
        lap(f"layer{len(self.encoder.layers) - 1}")  # the last layer's time includes the pooling, as ours
        if self.method == "prompt-tuning":
            pooled = torch.cat([pooled, comp], 1)
        importance = sum(importance_loss(r) for r in weights) / len(weights) if weights else torch.zeros(())
        return self.head(pooled), importance


class Clock:
    """Seconds per phase: each lap adds the time since the previous one to a phase."""

    def __init__(self):
        self.seconds, self.last = {}, time.perf_counter()

    def lap(self, phase):
        now = time.perf_counter()
        self.seconds[phase] = self.seconds.get(phase, 0.0) + now - self.last
        self.last = now


def importance_loss(weights, threshold=0.1):
    importance = weights.sum(0)
    cv2 = importance.var() / importance.mean() ** 2
    return torch.where(cv2 > threshold, cv2, torch.zeros_like(cv2))


def cached_features(assets, root, train, val):
    """The image features of both splits, kept in `.cache/` beside ours between runs."""
    path = Path(".cache") / "reference" / "mope_job_features.pt"
    ids = [r["id"] for r in train] + [r["id"] for r in val]
    if path.exists():
        saved = torch.load(path)
        if saved["ids"] == ids:
            return saved["train"], saved["val"]
    cnn = mobilenet_v2(str(assets / "models" / "mobilenet-v2" / "model.safetensors"))
    train_f, val_f = image_features(cnn, root, train), image_features(cnn, root, val)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"ids": ids, "train": train_f, "val": val_f}, path)
    return train_f, val_f


def read_split(root, split, labels):
    rows = [json.loads(line) for line in (root / f"{split}.jsonl").read_text().splitlines() if line.strip()]
    return rows, torch.tensor([labels.index(r["label"]) for r in rows])


def batches(tokenizer, rows, order, batch):
    for i in range(0, len(order), batch):
        index = order[i:i + batch]
        encodings = tokenizer.encode_batch([rows[j]["text"] for j in index])
        ids = torch.tensor([e.ids for e in encodings])
        pad = torch.tensor([e.attention_mask for e in encodings]) == 0
        yield index, ids, pad


def phases(a, model, optimizer, schedule, tokenizer, train, train_y, train_f, generator):
    """One epoch with each phase timed; the keys of `benches/benches/job/phases.rs`."""
    model.train()
    trainable = [q for q in model.parameters() if q.requires_grad]
    clock, steps, loss_sum = Clock(), 0, 0.0
    order = torch.randperm(len(train), generator=generator).tolist()
    for index, ids, pad in batches(tokenizer, train, order, a.batch):
        clock.lap("data")
        comp = train_f[index]
        clock.lap("features")
        logits, importance = model(ids, pad, comp, clock)
        task = F.cross_entropy(logits, train_y[index])
        loss = task + 0.01 * importance
        clock.lap("head_and_loss")
        loss.backward()
        clock.lap("backward")
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        schedule.step()
        clock.lap("optimizer")
        loss_sum += task.item()
        importance.item()
        clock.lap("metrics")
        steps += 1
    per_step = {k: v / steps for k, v in clock.seconds.items()}
    layers = [per_step.pop(f"layer{i}") for i in range(len(model.encoder.layers))]
    return {**per_step, "layers": layers, "mean_loss": loss_sum / steps, "steps": steps}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--method", choices=["prompt-tuning", "sequential", "mope"], required=True)
    p.add_argument("--assets", default=".assets")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--static-len", dest="static_len", type=int, default=6)
    p.add_argument("--num-experts", dest="num_experts", type=int, default=4)
    p.add_argument("--expert-len", dest="expert_len", type=int, default=6)
    p.add_argument("--mapper-hidden", dest="mapper_hidden", type=int, default=64)
    p.add_argument("--prompted-layers", dest="prompted_layers", default="0,1,2,3,4,5")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--phases", action="store_true", help="time one epoch by phase instead")
    a = p.parse_args()
    a.prompted_layers = [int(v) for v in a.prompted_layers.split(",")]
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    assets = Path(a.assets)
    root = assets / "datasets" / "emoji"
    labels = [l for l in (root / "labels.txt").read_text().splitlines() if l.strip()]
    tokenizer = Tokenizer.from_file(str(assets / "models" / "all-minilm-l6-v2" / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(512)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # to the batch's longest text
    (train, train_y), (val, val_y) = read_split(root, "train", labels), read_split(root, "val", labels)
    train_f, val_f = cached_features(assets, root, train, val)
    generator = torch.Generator().manual_seed(a.seed)
    model = Model(a, MiniLM(str(assets / "models" / "all-minilm-l6-v2" / "model.safetensors")), 1280, len(labels), generator)
    trainable = [q for q in model.parameters() if q.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=a.lr, weight_decay=1e-3)
    steps = a.epochs * math.ceil(len(train) / a.batch)
    warmup, floor = 5, 0.05
    rate = lambda s: (s + 1) / warmup if s < warmup else floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, steps - warmup)))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, rate)
    if a.phases:
        print(json.dumps(phases(a, model, optimizer, schedule, tokenizer, train, train_y, train_f, generator)))
        return
    train_rate = val_rate = val_accuracy = None
    for epoch in range(a.epochs):
        model.train()
        start = time.perf_counter()
        order = torch.randperm(len(train), generator=generator).tolist()
        for index, ids, pad in batches(tokenizer, train, order, a.batch):
            logits, importance = model(ids, pad, train_f[index])
            loss = F.cross_entropy(logits, train_y[index]) + 0.01 * importance
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            schedule.step()
            loss.item()  # the logged value, as ours logs each step's loss
        seconds = time.perf_counter() - start
        train_rate = train_rate or len(train) / seconds
        model.eval()
        start, correct = time.perf_counter(), 0
        with torch.no_grad():
            for index, ids, pad in batches(tokenizer, val, list(range(len(val))), a.batch):
                logits, _ = model(ids, pad, val_f[index])
                correct += (logits.argmax(1) == val_y[index]).sum().item()
        val_rate = val_rate or len(val) / (time.perf_counter() - start)
        val_accuracy = 100.0 * correct / len(val)
    print(json.dumps({
        "label": f"PyTorch {torch.__version__} eager, {a.threads} threads",
        "train_samples_per_second": train_rate,
        "val_samples_per_second": val_rate,
        "val_accuracy": val_accuracy,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }))


if __name__ == "__main__":
    main()
