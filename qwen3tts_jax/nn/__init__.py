"""Stateless building blocks: norms, rotary embedding, linear, attention with KV cache, MLP, convs."""
