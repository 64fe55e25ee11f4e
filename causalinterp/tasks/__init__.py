"""Dataset generators: each returns a `ContrastSet` for any tokenizer.

`ioi(tokenizer, n, templates=, corruption=, seed=)`   indirect object identification
`induction(vocab_size_or_tokenizer, n, seq_len=, seed=)`   repeated random sequences
`name_copy(tokenizer, n, seed=)`   copying a made-up two-token name in a short story (real tokenizers)
"""
from .induction import induction
from .ioi import ABBA_TEMPLATES, BABA_TEMPLATES, NAMES, OBJECTS, PLACES, TEMPLATES, ioi, single_token_names
from .names import STORY_TEMPLATES, name_copy, two_token_names

__all__ = ["ABBA_TEMPLATES", "BABA_TEMPLATES", "NAMES", "OBJECTS", "PLACES", "STORY_TEMPLATES", "TEMPLATES",
           "induction", "ioi", "name_copy", "single_token_names", "two_token_names"]
