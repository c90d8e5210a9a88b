"""An offline byte-level tokenizer for random models: no files, no downloads.

Token id ``b`` (0..255) is the byte ``b`` itself (shown in GPT-2's byte-to-unicode alphabet),
so any UTF-8 text round-trips exactly and ids are easy to read in tests. Special tokens follow
the bytes: ``<s>`` 256 (bos), ``</s>`` 257 (eos), ``<pad>`` 258, ``<|im_start|>`` 259,
``<|im_end|>`` 260; vocabulary size 261. No BOS is added on encode (prompts are taken as
given). The chat template is ChatML: ``<|im_start|>{role}\\n{content}<|im_end|>\\n`` per
message, plus ``<|im_start|>assistant\\n`` when ``add_generation_prompt``.
"""
from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

BOS, EOS, PAD, IM_START, IM_END = "<s>", "</s>", "<pad>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = (BOS, EOS, PAD, IM_START, IM_END)
BYTE_VOCAB_SIZE = 256 + len(SPECIAL_TOKENS)

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def make_byte_tokenizer() -> PreTrainedTokenizerFast:
    """A fresh byte-level fast tokenizer (deterministic: same ids on every call)."""
    # ByteLevel's alphabet maps each byte to a printable unicode char; order it by byte value
    # so that token id == byte value.
    byte_to_char = pre_tokenizers.ByteLevel.alphabet()
    chars = sorted(byte_to_char, key=_byte_of)
    vocab = {ch: i for i, ch in enumerate(chars)}
    assert len(vocab) == 256
    # A BPE with no merges: every byte stays its own token.
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    # use_regex=False: no GPT-2 word splitting is needed when there are no merges.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
        clean_up_tokenization_spaces=False)
    fast.add_special_tokens({"additional_special_tokens": [IM_START, IM_END]})
    fast.chat_template = CHATML_TEMPLATE
    return fast


_BYTES_TO_UNICODE: dict[str, int] | None = None


def _byte_of(ch: str) -> int:
    """Inverse of GPT-2's bytes_to_unicode (the ByteLevel alphabet)."""
    global _BYTES_TO_UNICODE
    if _BYTES_TO_UNICODE is None:
        bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
              + list(range(ord("®"), ord("ÿ") + 1)))
        cs = bs[:]
        n = 0
        for b in range(256):
            if b not in bs:
                bs.append(b)
                cs.append(256 + n)
                n += 1
        _BYTES_TO_UNICODE = {chr(c): b for b, c in zip(bs, cs)}
    return _BYTES_TO_UNICODE[ch]
