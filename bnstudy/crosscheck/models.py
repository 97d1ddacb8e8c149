"""The three transformers models the probes are checked on, built from configs (no download), and their batches
and modes."""
from __future__ import annotations

import copy

import torch
from torch import nn

SEED = 0
MODELS = ("resnet", "vit", "gpt2")
K = 3  # top eigenvalues compared
TOL = 1e-4  # ours' Lanczos, eigsh on curvlinops and hessian-eigenthings: the same relative tolerance
MAX_HVPS = 300
HE_STEPS = 40  # hessian-eigenthings' Lanczos runs a fixed number of steps (max_iter) and reports convergence after
TRACE_SAMPLES = 60  # products per trace estimate, each side (a multiple of 3 for Hutch++)
SLQ = {"n_v": 10, "m": 20}  # start vectors x Lanczos steps, both sides
REF_TOL = 1e-10  # eigsh on the float64 reference
REF_SAMPLES = 400  # Hutchinson samples of the trace reference
REPEATS = 3  # timings: the median of this many runs of each side


# ----------------------------------------------------------------------------------------------
# The models and batches
# ----------------------------------------------------------------------------------------------
class Logits(nn.Module):
    """A transformers model as our probes and the peers take it: model(inputs) -> logits. For a language model
    (`shift`), the logits of positions 0..T-2 flattened to (B (T-1), V), so that F.cross_entropy against
    ids[:, 1:].reshape(-1) is the LM loss."""

    def __init__(self, model: nn.Module, shift: bool = False):
        super().__init__()
        self.model, self.shift = model, shift

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        logits = self.model(inputs).logits
        return logits[:, :-1].reshape(-1, logits.shape[-1]) if self.shift else logits


def model_config(name: str, attn: str = "sdpa"):
    """The configs: ~80k parameters (ResNet, ViT), ~110k (GPT-2, vocabulary 500)."""
    from transformers import GPT2Config, ResNetConfig, ViTConfig

    if name == "resnet":
        return ResNetConfig(num_channels=3, embedding_size=32, hidden_sizes=[32, 64], depths=[1, 1],
                            layer_type="basic", num_labels=10)
    if name == "vit":
        return ViTConfig(image_size=32, patch_size=8, num_channels=3, hidden_size=48, num_hidden_layers=2,
                         num_attention_heads=4, intermediate_size=256, num_labels=10, hidden_dropout_prob=0.1,
                         attention_probs_dropout_prob=0.1, attn_implementation=attn)
    if name == "gpt2":
        return GPT2Config(vocab_size=500, n_positions=32, n_embd=48, n_layer=3, n_head=4, bos_token_id=0,
                          eos_token_id=0, attn_implementation=attn)
    raise ValueError(f"unknown model '{name}'; known: {', '.join(MODELS)}")


def build(name: str, attn: str = "sdpa", seed: int = SEED) -> Logits:
    """The model `name` with random weights from `seed`, in eval(); ResNet's BN running statistics warmed by three
    forward passes in train mode on random images (so that eval mode is not the identity of a fresh BN)."""
    from transformers import GPT2LMHeadModel, ResNetForImageClassification, ViTForImageClassification

    classes = {"resnet": ResNetForImageClassification, "vit": ViTForImageClassification, "gpt2": GPT2LMHeadModel}
    config = model_config(name, attn)
    torch.manual_seed(seed)
    model = Logits(classes[name](config), shift=name == "gpt2")
    if name == "resnet":
        generator = torch.Generator().manual_seed(seed + 1)
        model.train()
        with torch.no_grad():
            for _ in range(3):
                model(2 * torch.randn(16, 3, 32, 32, generator=generator) + 0.5)
    return model.eval()


def make_batch(name: str, seed: int = SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets): 8 images 3x32x32 with 10 classes, or 4 sequences of 32 token ids (targets: the ids shifted
    by one, flattened)."""
    generator = torch.Generator().manual_seed(seed + 2)
    if name == "gpt2":
        ids = torch.randint(0, model_config(name).vocab_size, (4, 32), generator=generator)
        return ids, ids[:, 1:].reshape(-1)
    return torch.randn(8, 3, 32, 32, generator=generator), torch.randint(0, 10, (8,), generator=generator)


def peer_copy(model: Logits, name: str) -> Logits:
    """The same weights, buffers and modes with eager attention (the peers' products need a double backward or
    forward-mode AD, which SDPA's fused CPU kernel lacks)."""
    if name == "resnet":
        return copy.deepcopy(model)
    twin = build(name, attn="eager")
    twin.load_state_dict(model.state_dict())
    for (_, a), (_, b) in zip(model.named_modules(), twin.named_modules()):
        b.training = a.training
    return twin


def trainable(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def set_bn_mode(model: nn.Module, mode: str) -> nn.Module:
    """BN layers alone to `mode`, as our bn_mode does (a peer's copy, where the peer takes the model's own modes)."""
    from torch.nn.modules.batchnorm import _NormBase

    for module in model.modules():
        if isinstance(module, _NormBase):
            module.training = mode == "train"
    return model


def bn_count(model: nn.Module) -> int:
    """num_batches_tracked of the first BN layer (0 where there is none)."""
    for name, buffer in model.named_buffers():
        if name.endswith("num_batches_tracked"):
            return int(buffer)
    return 0
