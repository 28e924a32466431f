"""Corpora, named datasets (download + cache), synthetic corpus, tokenizers, batching."""
