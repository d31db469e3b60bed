"""Tiny random checkpoints *with tokenizers*, saved as real Hugging Face model directories.

They exercise the same loading path a user's local checkpoint takes (config.json,
safetensors, tokenizer.json) in seconds and without any download. The tokenizer is a
small byte-level BPE trained here on a few sentences, so every string encodes.
"""

from __future__ import annotations

from pathlib import Path

CORPUS = [
    "The primary hormone involved in the regulation of blood pressure and volume is",
    " aldosterone renin angiotensin insulin dopamine constipation the a called known",
    "Aldosterone is the principal mineralocorticoid hormone in humans.",
    "The neurotransmitter associated with reward is dopamine.",
    "A common side effect of opioid analgesics is constipation.",
    "The capital of France is Paris. Answer: system user assistant",
]

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "<|{{ m['role'] }}|>{{ m['content'] }}{% if not loop.last or m['role'] != 'assistant' %}"
    "<|end|>{% endif %}{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

ARCHS = ("llama", "gemma3", "qwen3")


def build_tokenizer(vocab_size: int = 384):  # type: ignore[no-untyped-def]
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<pad>", "<bos>", "<eos>", "<unk>", "<|end|>"]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(CORPUS * 4, trainer)
    bos = tok.token_to_id("<bos>")
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", bos)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>", unk_token="<unk>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_config(arch: str, vocab_size: int, layers: int = 2):  # type: ignore[no-untyped-def]
    from transformers import Gemma3TextConfig, LlamaConfig, Qwen3Config

    common = dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64,
                  num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                  max_position_embeddings=256, pad_token_id=0, bos_token_id=1,
                  eos_token_id=2, tie_word_embeddings=False)
    if arch == "llama":
        return LlamaConfig(**common)
    if arch == "gemma3":
        return Gemma3TextConfig(**common, head_dim=8, sliding_window=16,
                                layer_types=["sliding_attention", "full_attention"]
                                * (layers // 2) + ["sliding_attention"] * (layers % 2))
    if arch == "qwen3":
        return Qwen3Config(**common, head_dim=8)
    raise ValueError(arch)


def save_tiny_checkpoint(arch: str, directory: Path, seed: int = 0, layers: int = 2,
                         strong: bool = False) -> Path:
    """``strong`` draws weights at ~1.5/sqrt(fan_in) instead of HF's std 0.02, so logits
    differ by whole units and a comparison's shares and categories are well above noise."""
    import torch
    from transformers import AutoModelForCausalLM

    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(build_config(arch, len(tokenizer), layers))
    if strong:
        with torch.no_grad():
            for name, param in model.named_parameters():
                if param.dim() >= 2:
                    param.normal_(0.0, 1.5 / param.shape[1] ** 0.5)
                elif "norm" in name:
                    param.normal_(1.0 if arch != "gemma3" else 0.0, 0.2)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
