"""Shared fixtures: tiny random-weight models of each family, built from configs (never the hub)."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

VOCAB = 64


def build_hf(family: str, seed: int = 0, parallel: bool = True):
    """A tiny model of `family` with random (seeded) weights and no dropout."""
    from transformers import (GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig,
                              LlamaForCausalLM)
    torch.manual_seed(seed)
    if family == "gpt2":
        cfg = GPT2Config(n_layer=2, n_head=4, n_embd=32, vocab_size=VOCAB, n_positions=64, resid_pdrop=0.0,
                         embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
        model = GPT2LMHeadModel(cfg)
    elif family == "gpt_neox":
        cfg = GPTNeoXConfig(num_hidden_layers=2, num_attention_heads=4, hidden_size=32, intermediate_size=64,
                            vocab_size=VOCAB, max_position_embeddings=64, use_parallel_residual=parallel,
                            bos_token_id=0, eos_token_id=0)
        model = GPTNeoXForCausalLM(cfg)
    elif family == "llama":
        cfg = LlamaConfig(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, hidden_size=32,
                          intermediate_size=64, vocab_size=VOCAB, max_position_embeddings=64, bos_token_id=0,
                          eos_token_id=0, pad_token_id=0)
        model = LlamaForCausalLM(cfg)
    elif family in ("qwen2", "mistral", "gemma"):  # Llama-style families that share the llama adapter table
        import transformers
        name = {"qwen2": "Qwen2", "mistral": "Mistral", "gemma": "Gemma"}[family]
        cfg = getattr(transformers, f"{name}Config")(
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, hidden_size=32, head_dim=8,
            intermediate_size=64, vocab_size=VOCAB, max_position_embeddings=64, bos_token_id=0, eos_token_id=0,
            pad_token_id=0)
        model = getattr(transformers, f"{name}ForCausalLM")(cfg)
    else:
        raise ValueError(family)
    # Larger-than-default weights make patching effects clearly non-zero in a 2-layer model.
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.mul_(4.0)
    return model.eval()


FAMILIES = ["gpt2", "gpt_neox", "llama"]


@pytest.fixture(params=FAMILIES)
def family(request):
    return request.param


@pytest.fixture
def hf_model(family):
    return build_hf(family)


def random_data(n=5, T=6, seed=1, vocab=VOCAB):
    import causalinterp as ci
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(1, vocab, (n, T), generator=g)
    corrupt = torch.randint(1, vocab, (n, T), generator=g)
    answer = torch.randint(1, vocab, (n,), generator=g)
    wrong = torch.randint(1, vocab, (n,), generator=g)
    return ci.ContrastSet.from_tokens(clean, corrupt, answer=answer, wrong=wrong)
