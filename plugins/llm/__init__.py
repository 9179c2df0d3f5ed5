"""Language-model evaluation for the driver: perplexity over sliding windows, and the perplexity a compile
measures (--eval-text). It registers nothing: its frontends are in plugins/frontends, its checks in plugins/checks,
its tokenizers in edgec.api.tokenizer."""
