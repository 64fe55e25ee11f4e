"""Dataset generators: each returns a `ContrastSet` for any tokenizer.

`ioi(tokenizer, n, templates=, corruption=, seed=)`   indirect object identification
`induction(vocab_size_or_tokenizer, n, seq_len=, seed=)`   repeated random sequences
"""
from .induction import induction
from .ioi import ABBA_TEMPLATES, BABA_TEMPLATES, NAMES, OBJECTS, PLACES, TEMPLATES, ioi, single_token_names

__all__ = ["ABBA_TEMPLATES", "BABA_TEMPLATES", "NAMES", "OBJECTS", "PLACES", "TEMPLATES", "induction", "ioi",
           "single_token_names"]
