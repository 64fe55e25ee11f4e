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
    elif family in CONFIGS:
        import transformers
        cls_cfg, cls_model, extra = CONFIGS[family]
        base = dict(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, hidden_size=32, head_dim=8,
                    intermediate_size=64, vocab_size=VOCAB, max_position_embeddings=64, bos_token_id=0,
                    eos_token_id=0, pad_token_id=0, attn_implementation="eager")
        base.update(extra)
        base = {k: v for k, v in base.items() if v is not _DROP}
        model = getattr(transformers, cls_model)(getattr(transformers, cls_cfg)(**base))
    elif family in NO_TABLE:
        import transformers
        cls_cfg, cls_model, kw = NO_TABLE[family]
        model = getattr(transformers, cls_model)(getattr(transformers, cls_cfg)(
            vocab_size=VOCAB, bos_token_id=0, eos_token_id=0, pad_token_id=0, **kw))
    else:
        raise ValueError(family)
    # Larger-than-default weights make patching effects clearly non-zero in a 2-layer model.
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.mul_(4.0)
    return model.eval()


_DROP = object()  # a base setting this config does not take
# Tiny configs of every model type with an adapter table (2 layers, 4 query heads, 2 key/value heads where
# the family has GQA, d_model 32, d_head 8).  Variants exercise config-dependent layouts.
CONFIGS = {
    "olmo": ("OlmoConfig", "OlmoForCausalLM", {}),
    "granite": ("GraniteConfig", "GraniteForCausalLM",
                {"residual_multiplier": 0.5, "embedding_multiplier": 2.0, "attention_multiplier": 0.3,
                 "logits_scaling": 2.0, "head_dim": _DROP}),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM",
               {"sliding_window": 3, "query_pre_attn_scalar": 8, "attn_logit_softcapping": 20.0,
                "final_logit_softcapping": 10.0}),
    "gemma3_text": ("Gemma3TextConfig", "Gemma3ForCausalLM",
                    {"sliding_window": 3, "query_pre_attn_scalar": 8, "layer_types": ["sliding_attention",
                                                                                       "full_attention"]}),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", {"head_dim": _DROP, "resid_pdrop": 0.0, "embd_pdrop": 0.0}),
    "olmo2": ("Olmo2Config", "Olmo2ForCausalLM", {"head_dim": _DROP}),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {}),
    "qwen3_moe": ("Qwen3MoeConfig", "Qwen3MoeForCausalLM",
                  {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32, "decoder_sparse_step": 1}),
    "mixtral": ("MixtralConfig", "MixtralForCausalLM", {"num_local_experts": 4, "num_experts_per_tok": 2}),
    "cohere": ("CohereConfig", "CohereForCausalLM", {"use_qk_norm": True, "head_dim": _DROP}),
    "stablelm": ("StableLmConfig", "StableLmForCausalLM",
                 {"qk_layernorm": True, "use_parallel_residual": False, "partial_rotary_factor": 0.5, "head_dim": _DROP}),
    "gptj": ("GPTJConfig", "GPTJForCausalLM",
             {"n_layer": 2, "n_head": 4, "n_embd": 32, "rotary_dim": 4, "n_positions": 64, "resid_pdrop": 0.0,
              "embd_pdrop": 0.0, "attn_pdrop": 0.0, "num_hidden_layers": _DROP, "num_attention_heads": _DROP,
              "num_key_value_heads": _DROP, "hidden_size": _DROP, "head_dim": _DROP, "intermediate_size": _DROP,
              "max_position_embeddings": _DROP}),
    # Falcon: multi-query + parallel (falcon-7b), per-head fused + sequential, new decoder architecture (40b)
    "falcon": ("FalconConfig", "FalconForCausalLM",
               {"multi_query": True, "parallel_attn": True, "num_key_value_heads": _DROP, "head_dim": _DROP,
                "intermediate_size": _DROP}),
    "falcon_seq": ("FalconConfig", "FalconForCausalLM",
                   {"multi_query": False, "parallel_attn": False, "num_key_value_heads": _DROP, "head_dim": _DROP,
                    "intermediate_size": _DROP}),
    "falcon_new": ("FalconConfig", "FalconForCausalLM",
                   {"new_decoder_architecture": True, "num_kv_heads": 2, "num_key_value_heads": _DROP,
                    "head_dim": _DROP, "intermediate_size": _DROP}),
}
# Families deliberately left without a table: their adapters are derived at load time.
NO_TABLE = {
    "gpt_neo": ("GPTNeoConfig", "GPTNeoForCausalLM",
                {"num_layers": 2, "attention_types": [[["global", "local"], 1]], "num_heads": 4, "hidden_size": 32,
                 "max_position_embeddings": 64, "window_size": 4, "embed_dropout": 0.0, "attention_dropout": 0.0,
                 "resid_dropout": 0.0}),
    "starcoder2": ("Starcoder2Config", "Starcoder2ForCausalLM",
                   {"num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "hidden_size": 32,
                    "intermediate_size": 64, "max_position_embeddings": 64, "residual_dropout": 0.0,
                    "embedding_dropout": 0.0}),
    "phi": ("PhiConfig", "PhiForCausalLM",
            {"num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 32, "intermediate_size": 64,
             "max_position_embeddings": 64, "resid_pdrop": 0.0, "embd_pdrop": 0.0}),
    "bloom": ("BloomConfig", "BloomForCausalLM", {"n_layer": 2, "n_head": 4, "hidden_size": 32}),
    "codegen": ("CodeGenConfig", "CodeGenForCausalLM",
                {"n_layer": 2, "n_head": 4, "n_embd": 32, "rotary_dim": 4, "n_positions": 64, "resid_pdrop": 0.0,
                 "embd_pdrop": 0.0, "attn_pdrop": 0.0}),
    "opt": ("OPTConfig", "OPTForCausalLM",
            {"num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 32, "ffn_dim": 64,
             "word_embed_proj_dim": 32, "max_position_embeddings": 64, "dropout": 0.0}),
}
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
    same = wrong == answer                       # answer == wrong is refused (a logit difference of 0 by construction)
    wrong[same] = answer[same] % (vocab - 1) + 1
    return ci.ContrastSet.from_tokens(clean, corrupt, answer=answer, wrong=wrong)
