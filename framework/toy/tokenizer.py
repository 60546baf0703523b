"""A word-level tokenizer for the toy world, with the ChatML template the fine-tuning and vLLM stages render.

The toy world writes every token between spaces, so one id per word is both the shortest encoding and the one
that keeps a value (`48`) a single token the model can copy. Pre-tokenization splits on whitespace only, so
`\\boxed` and `->` stay whole words; decoding joins words with single spaces, which round-trips toy text. The
turn end `<|im_end|>` is EOS and `<|endoftext|>` pads and separates pretraining documents: padding then never
hides the token the model must learn to stop on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from framework.toy.world import World, vocabulary

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

PAD, IM_START, IM_END, UNK = "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>"
SPECIAL_TOKENS = (PAD, IM_START, IM_END)
ROLES = ("system", "user", "assistant")  # words the chat template writes after <|im_start|>
CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
MODEL_MAX_LENGTH = 1024


def word_list(world: World) -> list[str]:
    """Every token in id order: specials first (fixed ids 0..3), then the chat roles, then the world's words."""
    words = [*SPECIAL_TOKENS, UNK, *ROLES]
    return words + [w for w in vocabulary(world) if w not in words]


def build_tokenizer(world: World) -> PreTrainedTokenizerFast:
    """The word-level fast tokenizer of `world`; a pure function of the world's vocabulary."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {word: i for i, word in enumerate(word_list(world))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    # Without a decoder, tokenizers joins decoded words with a single space: exactly the toy world's text.
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in (*SPECIAL_TOKENS, UNK)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=PAD,
        unk_token=UNK,
        extra_special_tokens=[IM_START],
        chat_template=CHATML_TEMPLATE,
        model_max_length=MODEL_MAX_LENGTH,
        clean_up_tokenization_spaces=False,
        # transformers 5 rebuilds the tokenizer of any qwen2 checkpoint as Qwen2's byte-level BPE (one token per
        # digit, words split into bytes) unless the tokenizer config names its own class through auto_map; with
        # it, AutoTokenizer (and vLLM, which calls it) loads this word-level tokenizer as saved.
        auto_map={"AutoTokenizer": [None, "TokenizersBackend"]},
    )
