"""GEM (arXiv 2503.22698, "Fragile Mastery: Are Domain-Specific Trade-Offs Undermining On-Device Language
Models?"): a small decoder-only LM with SCAR, the Sparse Cross-Attention Router, and the DSI / GG / CDTR
metrics of domain specialisation, forgetting and brittleness under compression.

Only the paper's abstract is available and the authors' code is a BERT classifier whose quantisation and
routing have no effect, so the architecture, SCAR's routing rule, the losses and every metric formula are
this package's own definitions, labelled "ours" (see gem/README.md). Modules:

- data/, prepare.py  the eight-domain suite, benchmark adapters and the byte-level BPE tokenizer
- config.py     ``ModelConfig`` (dense / scar / moe through ``ffn``)
- layers.py     RoPE, causal attention with a KV cache, norms, the dense FFN, the expert bank
- router.py     SCAR's cross-attention router, the linear top-k router, path selection, sparse dispatch,
                load-balancing and z-losses
- model.py      ``GemLM`` (LM loss, classification heads), distillation loss, dense baselines of equal cost
- generate.py   greedy / top-p generation with and without the KV cache; ``python -m gem.generate``
- compress.py   int8 dynamic quantisation, magnitude pruning, narrower / shallower variants, intensity
- export.py     ONNX export (full sequence and KV-cache step), ONNX Runtime, int8 ONNX
- metrics.py    DSI, GG, CDTR, forgetting, brittleness and its correlation with compression intensity
- reference.py  slow, obviously correct versions of every fast path (the tests compare against them)
- train.py      ``train()``: generalists, specialists (with distillation), held-out adaptation
- evaluate.py   per-domain perplexity, macro F1, MMLU accuracy, router use; ``python -m gem.evaluate``
- reproduce.py, report.py   the specialisation / generalisation / compression study and its report
- bench.py      on-device latency, decoding speed, size and memory of SCAR vs dense (``make bench-gem``)
"""
